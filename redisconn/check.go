package redisconn

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/redis/go-redis/v9"
)

// ErrUnusable is wrapped by the error that says Redis answers but cannot
// be used by this user: a permission (ACL) is missing, or a command or
// scripting is not there.
var ErrUnusable = errors.New("redis: reachable but unusable")

// checkScript is check.lua: whether the user may run given commands on a
// key.
//
//go:embed check.lua
var checkLua string

var checkScript = redis.NewScript(checkLua)

// calledCommand finds the commands a Lua script runs: redis.call('CMD' or
// redis.pcall("CMD".
var calledCommand = regexp.MustCompile(`redis\.p?call\(\s*['"]([A-Za-z]+)['"]`)

// commands returns the commands scripts call and extra, upper case, each
// once, sorted.
func commands(scripts, extra []string) []string {
	var out []string
	for _, s := range scripts {
		for _, m := range calledCommand.FindAllStringSubmatch(s, -1) {
			out = append(out, strings.ToUpper(m[1]))
		}
	}
	for _, c := range extra {
		out = append(out, strings.ToUpper(c))
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// check runs what the stores will run, once: SCRIPT LOAD of every
// script, then the permission check by EVAL and by EVALSHA on each of
// c.keys (or none), asking about every command the scripts call and
// c.commands. An error wrapping ErrUnusable names what is missing; any
// other error is Redis not answering.
func (c *Conn) check(ctx context.Context) error {
	for _, src := range append(slices.Clip(c.scripts), checkLua) {
		if err := c.Client.ScriptLoad(ctx, src).Err(); err != nil {
			return unusable("SCRIPT LOAD", err)
		}
	}
	keys := c.keys
	if len(keys) == 0 {
		keys = []string{""}
	}
	args := make([]any, len(c.cmds))
	for i, cmd := range c.cmds {
		args[i] = cmd
	}
	for _, key := range keys {
		var k []string // one key per call: a cluster keeps each in its slot
		if key != "" {
			k = []string{key}
		}
		for _, op := range []struct {
			name string
			run  func() *redis.Cmd
		}{
			{"EVAL", func() *redis.Cmd { return checkScript.Eval(ctx, c.Client, k, args...) }},
			// Loaded above (on every master of a cluster).
			{"EVALSHA", func() *redis.Cmd { return checkScript.EvalSha(ctx, c.Client, k, args...) }},
		} {
			refused, err := op.run().Text()
			if err != nil {
				return unusable(op.name, err)
			}
			if refused != "" {
				return fmt.Errorf("%w: this user may not run %s (grant it in the Redis ACL)", ErrUnusable, refused)
			}
		}
	}
	return nil
}

// refused reports whether err is Redis refusing a command for this user
// or server (NOPERM, unknown command), as opposed to not answering or a
// wrong password.
func refused(err error) bool {
	var re redis.Error
	if !errors.As(err, &re) {
		return false
	}
	msg := re.Error()
	return strings.HasPrefix(msg, "NOPERM") || strings.Contains(strings.ToLower(msg), "unknown command")
}

// unusable turns what Redis answered to op into an error wrapping
// ErrUnusable when it says the user or the server cannot do op; other
// errors (Redis not answering) are returned as they are.
func unusable(op string, err error) error {
	var re redis.Error
	if !errors.As(err, &re) || outage(context.Background(), err) {
		return err
	}
	msg := re.Error()
	switch {
	case strings.HasPrefix(msg, "NOPERM"):
		return fmt.Errorf("%w: %s refused, a permission is missing (grant it in the Redis ACL): %s", ErrUnusable, op, msg)
	case strings.HasPrefix(msg, "NOSCRIPT"):
		return fmt.Errorf("%w: %s: a script just loaded is not found: %s", ErrUnusable, op, msg)
	case strings.Contains(strings.ToLower(msg), "unknown command"):
		return fmt.Errorf("%w: %s: Redis does not know the command (renamed or disabled?): %s", ErrUnusable, op, msg)
	}
	return fmt.Errorf("%w: %s: %s", ErrUnusable, op, msg)
}
