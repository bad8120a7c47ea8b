package failover

import "syscall"

// dieWithParent makes the kernel kill a child when the test binary dies, even by SIGKILL, so
// that no replica or manager outlives a crashed test.
func dieWithParent() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
