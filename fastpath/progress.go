package fastpath

/*
#include "dp.h"
*/
import "C"

import (
	"sync/atomic"
	"unsafe"
)

// Progress returns, for every worker, how many times its packet loop has
// gone round since start (struct sp_worker.progress). A worker whose count
// stops moving is stuck: swanpathd then stops petting systemd's watchdog.
func (f *Fastpath) Progress() []uint64 {
	out := make([]uint64, len(f.workers))
	for w := range out {
		out[w] = atomic.LoadUint64((*uint64)(unsafe.Pointer(&f.dp.w[w].progress)))
	}
	return out
}
