package store

import (
	"context"
	"fmt"
	"time"
)

// Mount is one row of the mounts table: a shared folder of a VM.
type Mount struct {
	VMID      string
	Index     int
	HostDir   string
	GuestDir  string
	ReadOnly  bool
	CreatedAt time.Time
}

// InsertMount records m with the lowest index the VM does not use yet
// (set in m.Index). It returns ErrExists when the VM has a share at
// m.GuestDir already.
func InsertMount(ctx context.Context, q Querier, m *Mount) error {
	if m.CreatedAt.IsZero() {
		m.CreatedAt = time.Now().UTC()
	}
	err := q.QueryRowContext(ctx, `SELECT COALESCE(MIN(n), 0) FROM (
		SELECT 0 AS n WHERE NOT EXISTS (SELECT 1 FROM mounts WHERE vm_id = ?1 AND idx = 0)
		UNION ALL SELECT idx + 1 FROM mounts m1 WHERE vm_id = ?1
			AND NOT EXISTS (SELECT 1 FROM mounts m2 WHERE m2.vm_id = ?1 AND m2.idx = m1.idx + 1))`, m.VMID).Scan(&m.Index)
	if err != nil {
		return fmt.Errorf("record mount %s: %w", m.GuestDir, err)
	}
	_, err = q.ExecContext(ctx, `INSERT INTO mounts(vm_id, idx, host_dir, guest_dir, read_only, created_at) VALUES(?,?,?,?,?,?)`,
		m.VMID, m.Index, m.HostDir, m.GuestDir, m.ReadOnly, fmtTime(m.CreatedAt))
	if err != nil {
		return fmt.Errorf("record mount %s: %w", m.GuestDir, mapErr(err))
	}
	return nil
}

// DeleteMount removes the share of VM vmID mounted at guestDir;
// ErrNotFound when there is none.
func DeleteMount(ctx context.Context, q Querier, vmID, guestDir string) error {
	res, err := q.ExecContext(ctx, "DELETE FROM mounts WHERE vm_id = ? AND guest_dir = ?", vmID, guestDir)
	if err != nil {
		return fmt.Errorf("delete mount %s: %w", guestDir, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("mount %s: %w", guestDir, ErrNotFound)
	}
	return nil
}

// ListMounts returns the shares of VM vmID by index.
func ListMounts(ctx context.Context, q Querier, vmID string) ([]Mount, error) {
	rows, err := q.QueryContext(ctx, "SELECT vm_id, idx, host_dir, guest_dir, read_only, created_at FROM mounts WHERE vm_id = ? ORDER BY idx", vmID)
	if err != nil {
		return nil, fmt.Errorf("list mounts: %w", err)
	}
	defer rows.Close()
	var out []Mount
	for rows.Next() {
		var m Mount
		var created string
		if err := rows.Scan(&m.VMID, &m.Index, &m.HostDir, &m.GuestDir, &m.ReadOnly, &created); err != nil {
			return nil, fmt.Errorf("list mounts: %w", err)
		}
		m.CreatedAt = parseTime(created)
		out = append(out, m)
	}
	return out, rows.Err()
}
