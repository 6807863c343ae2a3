package testhost

import (
	"bytes"
	"fmt"
	"strings"
)

// SparseTar returns a tar archive (no end marker) holding one PAX (GNU 1.0)
// sparse file: name, size bytes long, of which only the first 512 are data.
// It takes 2.5 KiB, however large size is. archive/tar cannot write sparse
// files, so the blocks are made here.
func SparseTar(name string, size int64) []byte {
	var buf bytes.Buffer
	records := ""
	for _, kv := range [][2]string{{"GNU.sparse.major", "1"}, {"GNU.sparse.minor", "0"},
		{"GNU.sparse.name", name}, {"GNU.sparse.realsize", fmt.Sprint(size)}} {
		records += paxRecord(kv[0], kv[1])
	}
	buf.Write(tarHeader("PaxHeaders/"+name, 'x', int64(len(records))))
	buf.Write(pad([]byte(records)))
	sparseMap := "1\n0\n512\n"
	body := sparseMap + strings.Repeat("\x00", 512-len(sparseMap)) + strings.Repeat("z", 512)
	buf.Write(tarHeader("GNUSparseFile.0/"+name, '0', int64(len(body))))
	buf.WriteString(body)
	return buf.Bytes()
}

// paxRecord is "LEN key=value\n", LEN counting itself.
func paxRecord(k, v string) string {
	n := len(k) + len(v) + 3
	for {
		r := fmt.Sprintf("%d %s=%s\n", n, k, v)
		if len(r) == n {
			return r
		}
		n = len(r)
	}
}

// tarHeader is a ustar header block.
func tarHeader(name string, typ byte, size int64) []byte {
	h := make([]byte, 512)
	copy(h, name)
	copy(h[100:], "0000644\x00")
	copy(h[108:], "0000000\x00")
	copy(h[116:], "0000000\x00")
	copy(h[124:], fmt.Sprintf("%011o\x00", size))
	copy(h[136:], fmt.Sprintf("%011o\x00", 1700000000))
	copy(h[148:], "        ")
	h[156] = typ
	copy(h[257:], "ustar\x00")
	copy(h[263:], "00")
	sum := 0
	for _, b := range h {
		sum += int(b)
	}
	copy(h[148:], fmt.Sprintf("%06o\x00 ", sum))
	return h
}

func pad(b []byte) []byte {
	if r := len(b) % 512; r != 0 {
		b = append(b, make([]byte, 512-r)...)
	}
	return b
}
