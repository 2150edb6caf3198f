package daemon

import (
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/caproxy/caproxy/config"
	"github.com/caproxy/caproxy/credential"
	"github.com/caproxy/caproxy/limit"
)

// StateFile is the name of a single node's state file in state.dir when
// the config names none (config.State.File: the config file's name and
// ".state").
const StateFile = "caproxy.state"

// statePath is the state file cfg asks for.
func statePath(cfg *config.Config) string {
	name := cfg.State.File
	if name == "" {
		name = StateFile
	}
	return filepath.Join(cfg.State.Dir, name)
}

// stateLockWait is how long start waits for the state file's lock: another
// running caproxy holds it for as long as it runs, so a short wait then a
// clear error beats hanging.
const stateLockWait = time.Second

// The state file's meta bucket names its format, so a bbolt file written by
// anything else is told apart from caproxy's.
var (
	stateMetaBucket = []byte("caproxy")
	stateFormatKey  = []byte("format")
	stateFormat     = []byte("1")
)

// state is a single node's open state file and the stores kept in it.
type state struct {
	db     *bolt.DB
	budget *limit.BoltStore
	tokens *credential.BoltTokenStore
}

// openState opens (creating it if needed) the state file at path and the
// budget and token stores in it, the tokens kept for upstream (the
// upstream's base URL), on the clock now (nil: the wall clock). A
// file locked by another process is an error. A file that is not a
// readable caproxy state file (corrupt, truncated, written by something
// else) is set aside, renamed with a timestamp suffix, with a log line,
// and a fresh one is started: a bad file must not keep caproxy from
// starting again and again.
func openState(path, upstream string, now func() time.Time, logger *slog.Logger) (*state, error) {
	if err := checkStateDir(filepath.Dir(path)); err != nil {
		return nil, err
	}
	st, err := loadState(path, upstream, now)
	var bad *badStateError
	if !errors.As(err, &bad) {
		return st, err
	}
	aside := fmt.Sprintf("%s.bad-%s", path, time.Now().UTC().Format("20060102T150405.000000000Z"))
	if rerr := os.Rename(path, aside); rerr != nil {
		return nil, fmt.Errorf("state file %s is unreadable (%v) and could not be set aside: %w", path, bad.err, rerr)
	}
	logger.Error("state file unreadable: set aside, starting with an empty one; token generations and budget calls made before are not known",
		"file", path, "set_aside_as", aside, "err", bad.err)
	st, err = loadState(path, upstream, now)
	if errors.As(err, &bad) {
		return nil, fmt.Errorf("state file %s: a fresh file is unreadable: %w", path, bad.err)
	}
	return st, err
}

// badStateError says the state file is not a readable caproxy state file.
type badStateError struct{ err error }

func (e *badStateError) Error() string { return e.err.Error() }

// loadState opens the state file at path and its stores. A
// *badStateError says the file cannot be used as it is.
func loadState(path, upstream string, now func() time.Time) (st *state, err error) {
	if now == nil {
		now = time.Now
	}
	var db *bolt.DB
	defer func() {
		// bbolt trusts the file's pages: a damaged one can make it panic,
		// and a truncated one fault (SIGBUS) on reading the mapped file,
		// which SetPanicOnFault below turns into a panic on this goroutine.
		// (A fault inside Open leaks its descriptor; the file is set aside.)
		if r := recover(); r != nil {
			err = &badStateError{fmt.Errorf("reading it failed: %v", r)}
		}
		if err != nil && db != nil {
			db.Close()
		}
	}()
	// Everything that reads the file first runs here, on this goroutine,
	// so a fault on any page it uses is caught rather than fatal.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	db, err = bolt.Open(path, 0o600, &bolt.Options{Timeout: stateLockWait})
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return nil, fmt.Errorf("state file %s is locked by another process (another caproxy with the same state.dir?); "+
			"give each caproxy its own state.dir, or share state through redis", path)
	case err != nil:
		var pe *fs.PathError
		if errors.As(err, &pe) && pe.Op == "open" {
			return nil, fmt.Errorf("state file: %w", err)
		}
		return nil, &badStateError{err}
	}
	// bbolt applies the mode only when it creates the file.
	if err := os.Chmod(path, 0o600); err != nil {
		return nil, fmt.Errorf("state file: %w", err)
	}
	if err := checkStateFormat(db); err != nil {
		return nil, err
	}
	st = &state{db: db}
	if st.budget, err = limit.OpenBoltStore(db, upstream, &limit.MemoryStore{Now: now}); err != nil {
		return nil, &badStateError{err}
	}
	if st.tokens, err = credential.OpenBoltTokenStore(db, upstream, now); err != nil {
		return nil, &badStateError{err}
	}
	return st, nil
}

// checkStateFormat checks db's pages and that it is a caproxy state file
// (or a new, empty one, which it marks as such).
func checkStateFormat(db *bolt.DB) error {
	var fresh bool
	err := db.View(func(tx *bolt.Tx) error {
		// Read every key and value on this goroutine first (see loadState);
		// then Check, which reads on a goroutine of its own, finds the pages
		// readable and checks their structure.
		if err := readAll(tx.Cursor(), 0); err != nil {
			return err
		}
		var damaged error
		for err := range tx.Check() { // drained: Check's goroutine holds tx until done
			if damaged == nil {
				damaged = err
			}
		}
		if damaged != nil {
			return &badStateError{fmt.Errorf("damaged: %w", damaged)}
		}
		meta := tx.Bucket(stateMetaBucket)
		if meta == nil {
			empty := true
			tx.ForEach(func([]byte, *bolt.Bucket) error { empty = false; return nil })
			if !empty {
				return &badStateError{errors.New("not a caproxy state file")}
			}
			fresh = true
			return nil
		}
		if f := meta.Get(stateFormatKey); !bytes.Equal(f, stateFormat) {
			return &badStateError{fmt.Errorf("unknown state file format %q", f)}
		}
		return nil
	})
	if err != nil || !fresh {
		return err
	}
	return db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(stateMetaBucket)
		if err != nil {
			return err
		}
		return meta.Put(stateFormatKey, stateFormat)
	})
}

// maxStateDepth bounds how deep readAll follows nested buckets; caproxy's
// file nests two levels.
const maxStateDepth = 4

// readAll reads every key and value under c, following nested buckets, so
// that a page that cannot be read faults now, where it is caught.
func readAll(c *bolt.Cursor, depth int) error {
	if depth > maxStateDepth {
		return &badStateError{errors.New("buckets nested too deep: not a caproxy state file")}
	}
	h := crc32.NewIEEE()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		h.Write(k)
		if v != nil {
			h.Write(v)
			continue
		}
		if b := c.Bucket().Bucket(k); b != nil {
			if err := readAll(b.Cursor(), depth+1); err != nil {
				return err
			}
		}
	}
	return nil
}

// Close closes the state file.
func (s *state) Close() {
	s.db.Close()
}

// stateDirHint ends every error about state.dir: its default (the config
// file's directory) may be read-only, as a mounted config often is.
const stateDirHint = `; set state.dir (default: the config file's directory) to a directory caproxy may write, or to "" to keep state in memory only`

// checkStateDir says why dir cannot hold the state file, if it cannot.
func checkStateDir(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("state.dir: %w%s", err, stateDirHint)
	}
	if !fi.IsDir() {
		return fmt.Errorf("state.dir %s is not a directory%s", dir, stateDirHint)
	}
	f, err := os.CreateTemp(dir, ".caproxy-check-*")
	if err != nil {
		return fmt.Errorf("state.dir %s is not writable: %w%s", dir, err, stateDirHint)
	}
	f.Close()
	os.Remove(f.Name())
	return nil
}

// CheckState says why the state file cfg asks for could not be used, for
// -check: state.dir must be a writable directory and an existing state file
// must be writable. It does not open the file (a running caproxy holds its
// lock). Nothing is checked when state is off or Redis holds it.
func CheckState(cfg *config.Config) error {
	if cfg.Redis.Enabled() || cfg.State.Dir == "" {
		return nil
	}
	if err := checkStateDir(cfg.State.Dir); err != nil {
		return err
	}
	path := statePath(cfg)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("state file: %w", err)
	}
	return f.Close()
}
