package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Image is one row of the images table.
type Image struct {
	ID            string
	Name          string
	Source        string
	Path          string
	SizeBytes     int64
	KernelRelease string
	CreatedAt     time.Time
	// Digest is the source's content digest ("sha256:…"); empty when the
	// source has none (a Debian release).
	Digest string
	// CacheKey is the build cache key of the image's inputs.
	CacheKey string
	// BuildSeconds is how long the build (or cache hit) took.
	BuildSeconds float64
	// Cached is true when the build reused a cached result.
	Cached bool
	// RemovedAt is set on an image removed with --force while VMs still
	// name it; such rows are hidden from GetImage and ListImages.
	RemovedAt time.Time
}

const imageColumns = "id, name, source, path, size_bytes, kernel_release, created_at, digest, cache_key, build_seconds, cached, removed_at"

func scanImage(sc interface{ Scan(...any) error }) (Image, error) {
	var im Image
	var created, removed string
	err := sc.Scan(&im.ID, &im.Name, &im.Source, &im.Path, &im.SizeBytes, &im.KernelRelease, &created,
		&im.Digest, &im.CacheKey, &im.BuildSeconds, &im.Cached, &removed)
	im.CreatedAt = parseTime(created)
	if removed != "" {
		im.RemovedAt = parseTime(removed)
	}
	return im, err
}

// InsertImage inserts im; ErrExists when the name is taken.
func InsertImage(ctx context.Context, q Querier, im *Image) error {
	if im.CreatedAt.IsZero() {
		im.CreatedAt = time.Now().UTC()
	}
	_, err := q.ExecContext(ctx, "INSERT INTO images("+imageColumns+") VALUES(?,?,?,?,?,?,?,?,?,?,?,'')",
		im.ID, im.Name, im.Source, im.Path, im.SizeBytes, im.KernelRelease, fmtTime(im.CreatedAt),
		im.Digest, im.CacheKey, im.BuildSeconds, im.Cached)
	if err != nil {
		return fmt.Errorf("insert image %q: %w", im.Name, mapErr(err))
	}
	return nil
}

// GetImage returns the image whose name or id is ref, or ErrNotFound.
func GetImage(ctx context.Context, q Querier, ref string) (Image, error) {
	row := q.QueryRowContext(ctx, "SELECT "+imageColumns+" FROM images WHERE (name = ? OR id = ?) AND removed_at = '' LIMIT 1", ref, ref)
	im, err := scanImage(row)
	if errors.Is(err, sql.ErrNoRows) {
		return Image{}, fmt.Errorf("image %q: %w", ref, ErrNotFound)
	}
	return im, err
}

// ListImages returns every image ordered by name.
func ListImages(ctx context.Context, q Querier) ([]Image, error) {
	rows, err := q.QueryContext(ctx, "SELECT "+imageColumns+" FROM images WHERE removed_at = '' ORDER BY name")
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	defer rows.Close()
	var out []Image
	for rows.Next() {
		im, err := scanImage(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, im)
	}
	return out, rows.Err()
}

// ImageUsers returns the names of VMs built from image id.
func ImageUsers(ctx context.Context, q Querier, id string) ([]string, error) {
	rows, err := q.QueryContext(ctx, "SELECT name FROM vms WHERE image_id = ? ORDER BY name", id)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, rows.Err()
}

// DeleteImage removes the image row; ErrNotFound when absent.
func DeleteImage(ctx context.Context, q Querier, id string) error {
	res, err := q.ExecContext(ctx, "DELETE FROM images WHERE id = ?", id)
	if err != nil {
		return fmt.Errorf("delete image %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("delete image %s: %w", id, ErrNotFound)
	}
	return nil
}

// MarkImageRemoved turns image id into a tombstone: hidden from GetImage and
// ListImages, its name freed (renamed NAME@ID), its row kept for the VMs that
// still name it. ErrNotFound when absent.
func MarkImageRemoved(ctx context.Context, q Querier, id string) error {
	res, err := q.ExecContext(ctx, "UPDATE images SET removed_at = ?, name = name || '@' || id WHERE id = ? AND removed_at = ''",
		fmtTime(time.Now().UTC()), id)
	if err != nil {
		return fmt.Errorf("mark image %s removed: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("mark image %s removed: %w", id, ErrNotFound)
	}
	return nil
}

// DeleteUnusedRemovedImages deletes the tombstones (see MarkImageRemoved)
// that no VM names any more.
func DeleteUnusedRemovedImages(ctx context.Context, q Querier) error {
	_, err := q.ExecContext(ctx, "DELETE FROM images WHERE removed_at != '' AND id NOT IN (SELECT image_id FROM vms)")
	if err != nil {
		return fmt.Errorf("delete removed images: %w", err)
	}
	return nil
}
