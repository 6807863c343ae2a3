// Package vmlinux checks that a file is a kernel Firecracker v1.16.1 can
// boot on x86_64: an uncompressed ELF vmlinux (64-bit, little-endian,
// x86-64, an executable with loadable segments), entered through its PVH
// note (Xen's PHYS32_ENTRY, present in kernels built with CONFIG_PVH=y) or
// else through its 64-bit ELF entry point. Firecracker's loader
// (linux-loader's Elf::load) refuses anything else, a bzImage included, but
// only at InstanceStart; the driver checks before launching, so that the
// error says what is wrong and how to fix it.
package vmlinux

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
)

// PVH note: name "Xen", type XEN_ELFNOTE_PHYS32_ENTRY.
const (
	xenNoteName        = "Xen"
	xenPhys32EntryType = 18
)

// Info describes a kernel that passed Check.
type Info struct {
	// PVH is true when the kernel carries a PVH entry note (the entry
	// Firecracker uses then), and PVHEntry is that entry's address.
	PVH      bool
	PVHEntry uint32
	// Entry is the ELF entry point.
	Entry uint64
}

// ErrNotELF is wrapped by Check's error when the file is not an ELF file at
// all; ErrBzImage when it is a bzImage (a compressed, self-extracting
// kernel: the Linux boot protocol's "HdrS" signature at offset 0x202).
var (
	ErrNotELF  = errors.New("not an ELF file")
	ErrBzImage = errors.New("a bzImage (compressed kernel), not an uncompressed ELF vmlinux")
)

// Check opens path and checks it with CheckReader.
func Check(path string) (Info, error) {
	f, err := os.Open(path)
	if err != nil {
		return Info{}, err
	}
	defer f.Close()
	return CheckReader(f)
}

// CheckReader checks that r holds a kernel Firecracker boots on x86_64 (see
// the package comment) and returns how it would be entered. The error
// wraps ErrBzImage or ErrNotELF when the file is no ELF.
func CheckReader(r io.ReaderAt) (Info, error) {
	ef, err := elf.NewFile(r)
	if err != nil {
		hdr := make([]byte, 0x206)
		if n, _ := r.ReadAt(hdr, 0); n == len(hdr) && string(hdr[0x202:0x206]) == "HdrS" {
			return Info{}, ErrBzImage
		}
		return Info{}, fmt.Errorf("%w: %w", ErrNotELF, err)
	}
	switch {
	case ef.Class != elf.ELFCLASS64:
		return Info{}, fmt.Errorf("ELF class %v: want a 64-bit kernel", ef.Class)
	case ef.Data != elf.ELFDATA2LSB:
		return Info{}, fmt.Errorf("ELF data %v: want little-endian", ef.Data)
	case ef.Machine != elf.EM_X86_64:
		return Info{}, fmt.Errorf("ELF machine %v: want x86-64", ef.Machine)
	case ef.Type != elf.ET_EXEC:
		return Info{}, fmt.Errorf("ELF type %v: want an executable (ET_EXEC) kernel", ef.Type)
	}
	info := Info{Entry: ef.Entry}
	loads := 0
	for _, p := range ef.Progs {
		switch p.Type {
		case elf.PT_LOAD:
			loads++
		case elf.PT_NOTE:
			if e, ok := pvhEntry(p.Open(), p.Filesz); ok {
				info.PVH, info.PVHEntry = true, e
			}
		}
	}
	if loads == 0 {
		return Info{}, errors.New("the ELF file has no loadable segment")
	}
	if !info.PVH && info.Entry == 0 {
		return Info{}, errors.New("the ELF file has neither a PVH entry note nor an entry point")
	}
	return info, nil
}

// pvhEntry scans a PT_NOTE segment for Xen's PHYS32_ENTRY note.
func pvhEntry(r io.Reader, size uint64) (uint32, bool) {
	if size > 1<<20 {
		return 0, false
	}
	b, err := io.ReadAll(io.LimitReader(r, int64(size)))
	if err != nil {
		return 0, false
	}
	align4 := func(n uint32) uint32 { return (n + 3) &^ 3 }
	for len(b) >= 12 {
		namesz, descsz, typ := binary.LittleEndian.Uint32(b), binary.LittleEndian.Uint32(b[4:]), binary.LittleEndian.Uint32(b[8:])
		b = b[12:]
		if uint64(align4(namesz))+uint64(align4(descsz)) > uint64(len(b)) {
			return 0, false
		}
		name := bytes.TrimRight(b[:namesz], "\x00")
		desc := b[align4(namesz) : align4(namesz)+descsz]
		if string(name) == xenNoteName && typ == xenPhys32EntryType && len(desc) >= 4 {
			return binary.LittleEndian.Uint32(desc), true
		}
		b = b[align4(namesz)+align4(descsz):]
	}
	return 0, false
}

// Minimal returns the smallest kernel image Check accepts: an x86-64
// ELF executable with one loadable segment at 16 MiB (a few bytes of
// "code"), entry 16 MiB, and, when pvh, a PVH entry note. It is for tests of
// code that must be handed a bootable-looking kernel; nothing can run it.
func Minimal(pvh bool) []byte {
	const (
		ehsize = 64
		phsize = 56
		base   = 16 << 20
	)
	note := []byte{}
	if pvh {
		note = binary.LittleEndian.AppendUint32(note, 4) // namesz "Xen\0"
		note = binary.LittleEndian.AppendUint32(note, 4) // descsz
		note = binary.LittleEndian.AppendUint32(note, xenPhys32EntryType)
		note = append(note, "Xen\x00"...)
		note = binary.LittleEndian.AppendUint32(note, base)
	}
	nph := 1
	if pvh {
		nph = 2
	}
	code := []byte{0xf4, 0xeb, 0xfd} // hlt; jmp hlt
	codeOff := uint64(ehsize + nph*phsize)
	noteOff := codeOff + uint64(len(code))
	var out bytes.Buffer
	le := binary.LittleEndian
	hdr := elf.Header64{
		Type: uint16(elf.ET_EXEC), Machine: uint16(elf.EM_X86_64), Version: uint32(elf.EV_CURRENT),
		Entry: base, Phoff: ehsize, Ehsize: ehsize, Phentsize: phsize, Phnum: uint16(nph),
	}
	copy(hdr.Ident[:], elf.ELFMAG)
	hdr.Ident[elf.EI_CLASS], hdr.Ident[elf.EI_DATA], hdr.Ident[elf.EI_VERSION] = byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), byte(elf.EV_CURRENT)
	binary.Write(&out, le, hdr)
	binary.Write(&out, le, elf.Prog64{Type: uint32(elf.PT_LOAD), Flags: uint32(elf.PF_R | elf.PF_X), Off: codeOff,
		Vaddr: base, Paddr: base, Filesz: uint64(len(code)), Memsz: uint64(len(code)), Align: 1})
	if pvh {
		binary.Write(&out, le, elf.Prog64{Type: uint32(elf.PT_NOTE), Off: noteOff, Filesz: uint64(len(note)), Memsz: uint64(len(note)), Align: 4})
	}
	out.Write(code)
	out.Write(note)
	return out.Bytes()
}
