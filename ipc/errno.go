package ipc

import "syscall"

var syscallEMFILE = syscall.EMFILE
