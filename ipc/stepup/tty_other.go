//go:build !linux

package stepup

import "os"

// ttyName is not known without ttyname(3) here; clients set STEPUP_TTY.
func ttyName(f *os.File) string { return "" }
