package paths

import (
	"fmt"
	"os"
	"syscall"
)

func checkOwned(p string, st os.FileInfo) error {
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && int(sys.Uid) != os.Getuid() {
		return fmt.Errorf("%s is owned by uid %d, not you (uid %d): set XDG_RUNTIME_DIR to a private directory", p, sys.Uid, os.Getuid())
	}
	return nil
}
