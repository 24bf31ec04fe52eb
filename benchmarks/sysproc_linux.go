package main

import (
	"os/exec"
	"syscall"
)

// stopWithParent has the kernel send cmd SIGTERM if the benchmarks die
// without stopping it (a test binary's timeout, SIGKILL), so that no replica
// outlives the run. The signal is tied to the thread that starts cmd, which
// the Go runtime keeps, since nothing here locks a goroutine to its thread.
func stopWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
