// Package slogjournal is a log/slog handler that writes structured entries
// to systemd's journal: every attribute becomes a journal field with an
// uppercase name (spi -> SPI, reqid -> REQID, port -> PORT), so that
// `journalctl -u swanpathd SPI=0x0000c001` finds an SA's lines. MESSAGE
// carries the message and the attributes as text too, for plain
// `journalctl` output.
package slogjournal

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"github.com/coreos/go-systemd/v22/journal"
)

// SendFunc sends one journal entry (journal.Send).
type SendFunc func(message string, priority journal.Priority, vars map[string]string) error

// Handler is the slog.Handler. Its zero value is not usable: use New.
type Handler struct {
	level  slog.Leveler
	ident  string
	send   SendFunc
	prefix string  // open groups, "A_B_"
	attrs  []field // from WithAttrs, already named
	errMu  *sync.Mutex
}

type field struct{ name, key, value string }

// New returns a handler that logs at level and above with
// SYSLOG_IDENTIFIER ident. A nil send is journal.Send.
func New(level slog.Leveler, ident string, send SendFunc) *Handler {
	if send == nil {
		send = journal.Send
	}
	if level == nil {
		level = slog.LevelInfo
	}
	return &Handler{level: level, ident: ident, send: send, errMu: new(sync.Mutex)}
}

// Usable says whether stderr is connected to the journal (systemd sets
// JOURNAL_STREAM for a service whose stderr goes there) and the journal's
// socket is there: then New's handler should replace a text one.
func Usable() bool {
	ok, err := journal.StderrIsJournalStream()
	return err == nil && ok && journal.Enabled()
}

func (h *Handler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level.Level() }

func (h *Handler) WithAttrs(as []slog.Attr) slog.Handler {
	h2 := *h
	h2.attrs = append([]field(nil), h.attrs...)
	for _, a := range as {
		h2.attrs = appendAttr(h2.attrs, h.prefix, a)
	}
	return &h2
}

func (h *Handler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	h2 := *h
	h2.prefix = h.prefix + FieldName(name) + "_"
	return &h2
}

func (h *Handler) Handle(_ context.Context, r slog.Record) error {
	fs := append([]field(nil), h.attrs...)
	r.Attrs(func(a slog.Attr) bool {
		fs = appendAttr(fs, h.prefix, a)
		return true
	})
	var msg strings.Builder
	msg.WriteString(r.Message)
	vars := make(map[string]string, len(fs)+1)
	for _, f := range fs {
		fmt.Fprintf(&msg, " %s=%s", f.key, quote(f.value))
		vars[f.name] = f.value
	}
	if h.ident != "" {
		vars["SYSLOG_IDENTIFIER"] = h.ident
	}
	return h.send(msg.String(), priority(r.Level), vars)
}

// appendAttr flattens a (groups become NAME_ prefixes) into fields.
func appendAttr(fs []field, prefix string, a slog.Attr) []field {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return fs
	}
	if a.Value.Kind() == slog.KindGroup {
		p := prefix
		if a.Key != "" {
			p += FieldName(a.Key) + "_"
		}
		for _, g := range a.Value.Group() {
			fs = appendAttr(fs, p, g)
		}
		return fs
	}
	key := strings.ToLower(strings.ReplaceAll(prefix, "_", ".")) + a.Key
	return append(fs, field{name: reserve(prefix + FieldName(a.Key)), key: key, value: a.Value.String()})
}

// FieldName is a journal field name for an attribute key: uppercase
// letters, digits and underscores, starting with a letter.
func FieldName(key string) string {
	var b strings.Builder
	for _, c := range key {
		switch {
		case c >= 'a' && c <= 'z':
			b.WriteRune(c - 'a' + 'A')
		case c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
			b.WriteRune(c)
		default:
			b.WriteByte('_')
		}
	}
	s := b.String()
	if s == "" || s[0] < 'A' || s[0] > 'Z' {
		s = "F" + s
	}
	return s
}

// reserve keeps attributes off the fields this handler (or journald)
// fills itself.
func reserve(name string) string {
	switch name {
	case "MESSAGE", "PRIORITY", "SYSLOG_IDENTIFIER", "MESSAGE_ID", "CODE_FILE", "CODE_LINE", "CODE_FUNC":
		return "ATTR_" + name
	}
	return name
}

func priority(l slog.Level) journal.Priority {
	switch {
	case l >= slog.LevelError:
		return journal.PriErr
	case l >= slog.LevelWarn:
		return journal.PriWarning
	case l >= slog.LevelInfo:
		return journal.PriInfo
	default:
		return journal.PriDebug
	}
}

func quote(s string) string {
	if s == "" || strings.ContainsAny(s, " \t\n\"=") {
		return fmt.Sprintf("%q", s)
	}
	return s
}
