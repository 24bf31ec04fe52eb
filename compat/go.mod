module github.com/reqpool/reqpool/compat

go 1.26.0

replace github.com/reqpool/reqpool => ../

require (
	github.com/go-chi/chi/v5 v5.5.0
	github.com/reqpool/reqpool v0.0.0
	go.uber.org/goleak v1.3.0
)

require (
	github.com/google/uuid v1.6.0 // indirect
	github.com/jmoiron/sqlx v1.4.0 // indirect
	github.com/lib/pq v1.12.3 // indirect
)
