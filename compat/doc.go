// Package compat holds tests of reqpool behind third-party routers and
// middleware (chi), in a module of its own so that they stay out of
// reqpool's requirements. It has no code of its own.
package compat
