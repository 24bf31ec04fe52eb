//go:build !linux

package main

import "os/exec"

// stopWithParent does nothing here: only Linux can tie a child's life to
// its parent's. The scenarios stop what they start on every path but a
// crash.
func stopWithParent(*exec.Cmd) {}
