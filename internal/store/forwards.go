package store

import (
	"context"
	"fmt"
	"time"
)

// Forward is one row of the forwards table: a port forward of a VM, in
// the canonical form of portfwd.Spec (the other columns are its parts,
// for the uniqueness of the host side).
type Forward struct {
	VMID      string
	Spec      string
	HostAddr  string
	HostPort  uint16
	GuestPort uint16
	Proto     string
	CreatedAt time.Time
}

// InsertForward records f. It returns ErrExists when another forward (of
// any VM) has the same host address, port and protocol.
func InsertForward(ctx context.Context, q Querier, f *Forward) error {
	if f.CreatedAt.IsZero() {
		f.CreatedAt = time.Now().UTC()
	}
	_, err := q.ExecContext(ctx, `INSERT INTO forwards(vm_id, spec, host_addr, host_port, guest_port, proto, created_at)
		VALUES(?,?,?,?,?,?,?)`, f.VMID, f.Spec, f.HostAddr, f.HostPort, f.GuestPort, f.Proto, fmtTime(f.CreatedAt))
	if err != nil {
		return fmt.Errorf("record forward %s: %w", f.Spec, mapErr(err))
	}
	return nil
}

// DeleteForward removes the forward spec of VM vmID; ErrNotFound when it
// has none such.
func DeleteForward(ctx context.Context, q Querier, vmID, spec string) error {
	res, err := q.ExecContext(ctx, "DELETE FROM forwards WHERE vm_id = ? AND spec = ?", vmID, spec)
	if err != nil {
		return fmt.Errorf("delete forward %s: %w", spec, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("forward %s: %w", spec, ErrNotFound)
	}
	return nil
}

// ListForwards returns the forwards of VM vmID, or of every VM when vmID
// is empty, in the order they were made.
func ListForwards(ctx context.Context, q Querier, vmID string) ([]Forward, error) {
	query := "SELECT vm_id, spec, host_addr, host_port, guest_port, proto, created_at FROM forwards"
	var args []any
	if vmID != "" {
		query += " WHERE vm_id = ?"
		args = append(args, vmID)
	}
	rows, err := q.QueryContext(ctx, query+" ORDER BY rowid", args...)
	if err != nil {
		return nil, fmt.Errorf("list forwards: %w", err)
	}
	defer rows.Close()
	var out []Forward
	for rows.Next() {
		var f Forward
		var created string
		if err := rows.Scan(&f.VMID, &f.Spec, &f.HostAddr, &f.HostPort, &f.GuestPort, &f.Proto, &created); err != nil {
			return nil, fmt.Errorf("list forwards: %w", err)
		}
		f.CreatedAt = parseTime(created)
		out = append(out, f)
	}
	return out, rows.Err()
}
