package reqpool

import (
	"bufio"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestREADMECompiles builds every Go block of README.md as a user would
// paste it: a block of declarations (func, type) as the body of a main
// package; a block that opens with statements, those statements as main's
// body and the rest as declarations. What a block leaves to its reader (a
// mux, an address, the user's own query functions) comes from readmeStubs,
// and the imports from readmeImports, by the package names the block uses.
// Errors point at README.md's lines.
func TestREADMECompiles(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go build")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("go not found: %v", err)
	}
	root, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	blocks := readmeGoBlocks(t, filepath.Join(root, "README.md"))
	if len(blocks) < 3 {
		t.Fatalf("%d Go blocks in README.md, want at least 3", len(blocks))
	}

	dir := t.TempDir()
	write := func(name, text string) {
		t.Helper()
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("go.mod", fmt.Sprintf("module readme\n\ngo 1.26\n\nrequire github.com/reqpool/reqpool v0.0.0\n\nreplace github.com/reqpool/reqpool => %s\n", root))
	sum, err := os.ReadFile(filepath.Join(root, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	write("go.sum", string(sum))
	for i, b := range blocks {
		main, stubs := readmeProgram(t, b)
		write(fmt.Sprintf("block%d/main.go", i+1), main)
		write(fmt.Sprintf("block%d/stubs.go", i+1), stubs)
	}

	// -mod=mod fills in go.mod's requirements from the module cache, which
	// building this package has filled; GOPROXY=off keeps it off the network.
	cmd := exec.Command(goBin, "build", "-mod=mod", "./...")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOPROXY=off", "GOFLAGS=", "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("README.md's Go blocks do not compile: %v\n%s", err, out)
	}
}

// readmeBlock is one ```go block of README.md.
type readmeBlock struct {
	line int // README.md's line of the block's first line of code
	code string
}

func readmeGoBlocks(t *testing.T, path string) []readmeBlock {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var blocks []readmeBlock
	var cur *readmeBlock
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case cur == nil && strings.TrimSpace(line) == "```go":
			cur = &readmeBlock{line: n + 1}
		case cur != nil && strings.TrimSpace(line) == "```":
			blocks = append(blocks, *cur)
			cur = nil
		case cur != nil:
			cur.code += line + "\n"
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if cur != nil {
		t.Fatalf("README.md:%d: a Go block that does not end", cur.line-1)
	}
	return blocks
}

// readmeImports are the packages a README block may use, by name.
var readmeImports = map[string]string{
	"context":     "context",
	"errors":      "errors",
	"fmt":         "fmt",
	"http":        "net/http",
	"httptest":    "net/http/httptest",
	"log":         "log",
	"os":          "os",
	"reqpool":     "github.com/reqpool/reqpool",
	"reqpooltest": "github.com/reqpool/reqpool/reqpooltest",
	"testing":     "testing",
	"sqlx":        "github.com/jmoiron/sqlx",
	"time":        "time",
}

// readmeStubs declare what the README's blocks leave to their reader, by
// name: a block's stubs file holds those it does not declare itself.
var readmeStubs = map[string]string{
	"addr":        `var addr = "127.0.0.1:8080"`,
	"mux":         `var mux = http.NewServeMux()`,
	"ctx":         `var ctx = context.Background()`,
	"srv":         `var srv = &http.Server{}`,
	"pool":        `var pool *reqpool.Pool`,
	"User":        "type User struct {\n\tID   int\n\tName string\n}",
	"countUsers":  `func countUsers(ctx context.Context, n *int) error { return nil }`,
	"countOrders": `func countOrders(ctx context.Context, n *int) error { return nil }`,
	"orgPage":     `func orgPage(w http.ResponseWriter, r *http.Request) {}`,
}

var topLevel = regexp.MustCompile(`(?m)^(func|type) `)

// readmeProgram returns the main package that block b is pasted into, and
// its stubs file.
func readmeProgram(t *testing.T, b readmeBlock) (main, stubs string) {
	// Statements first, if any: up to the first top-level declaration.
	stmts, decls := "", b.code
	declLine := b.line
	if loc := topLevel.FindStringIndex(b.code); loc == nil || loc[0] > 0 {
		end := len(b.code)
		if loc != nil {
			end = loc[0]
		}
		stmts, decls = b.code[:end], b.code[end:]
		declLine = b.line + strings.Count(stmts, "\n")
	}
	body := fmt.Sprintf("//line README.md:%d\n%s", declLine, decls)
	if stmts != "" {
		body = fmt.Sprintf("func main() {\n//line README.md:%d\n%s}\n\n%s", b.line, stmts, body)
	} else if !strings.Contains(decls, "\nfunc main()") && !strings.HasPrefix(decls, "func main()") {
		body = "func main() {}\n\n" + body
	}

	// The names it uses and declares, from its syntax.
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "README.md", "package main\n\n"+body, parser.SkipObjectResolution)
	if err != nil {
		t.Fatalf("README.md:%d: a Go block that does not parse: %v", b.line, err)
	}
	declared := map[string]bool{}
	for _, d := range f.Decls {
		switch d := d.(type) {
		case *ast.FuncDecl:
			declared[d.Name.Name] = true
		case *ast.GenDecl:
			for _, s := range d.Specs {
				switch s := s.(type) {
				case *ast.TypeSpec:
					declared[s.Name.Name] = true
				case *ast.ValueSpec:
					for _, n := range s.Names {
						declared[n.Name] = true
					}
				}
			}
		}
	}
	used := map[string]bool{}
	ast.Inspect(f, func(n ast.Node) bool {
		if sel, ok := n.(*ast.SelectorExpr); ok {
			if id, ok := sel.X.(*ast.Ident); ok {
				used[id.Name] = true
			}
		}
		return true
	})

	var imports, stubLines []string
	for name, path := range readmeImports {
		if used[name] {
			imports = append(imports, fmt.Sprintf("%q", path))
		}
	}
	for name, decl := range readmeStubs {
		if !declared[name] {
			stubLines = append(stubLines, decl)
		}
	}
	slices.Sort(imports)
	slices.Sort(stubLines)
	main = "package main\n\nimport (\n\t" + strings.Join(imports, "\n\t") + "\n)\n\n" + body
	stubs = `package main

import (
	"context"
	"net/http"

	"github.com/reqpool/reqpool"
)

var (
	_ context.Context
	_ http.Handler
	_ *reqpool.Pool
)

` + strings.Join(stubLines, "\n") + "\n"
	return main, stubs
}
