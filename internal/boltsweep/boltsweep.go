// Package boltsweep loads what caproxy keeps in its bbolt state file: a
// top-level bucket of nested buckets (one per budget key, one per
// upstream), each entry visited once at open, the expired ones deleted and
// buckets left empty removed, so the file never grows with old entries.
package boltsweep

import (
	"bytes"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// Sweep visits, in tx, every entry k, v of every bucket nested in the
// top-level bucket root (created when missing). visit reports whether to
// keep the entry (false deletes it) or an error, which ends the sweep; a
// nested bucket with no entries left is deleted. A value where a nested
// bucket belongs means the file is not caproxy's: an error.
func Sweep(tx *bolt.Tx, root []byte, visit func(bucket, k, v []byte) (keep bool, err error)) error {
	top, err := tx.CreateBucketIfNotExists(root)
	if err != nil {
		return err
	}
	var emptied [][]byte
	err = top.ForEach(func(name, v []byte) error {
		b := top.Bucket(name)
		if v != nil || b == nil {
			return fmt.Errorf("unexpected value at %q", name)
		}
		var expired [][]byte
		err := b.ForEach(func(k, v []byte) error {
			keep, err := visit(name, k, v)
			if err != nil {
				return err
			}
			if !keep {
				expired = append(expired, bytes.Clone(k))
			}
			return nil
		})
		if err != nil {
			return err
		}
		// Deleting while ForEach walks is not allowed: after it.
		for _, k := range expired {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		if k, _ := b.Cursor().First(); k == nil {
			emptied = append(emptied, bytes.Clone(name))
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, name := range emptied {
		if err := top.DeleteBucket(name); err != nil {
			return err
		}
	}
	return nil
}
