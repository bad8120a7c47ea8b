//go:build !linux

package failover

import "syscall"

// dieWithParent: only Linux kills children with their parent; elsewhere t.Cleanup alone does.
func dieWithParent() *syscall.SysProcAttr { return nil }
