//go:build !unix

package policy

import "io/fs"

func checkOwner(fs.FileInfo) error { return nil }
