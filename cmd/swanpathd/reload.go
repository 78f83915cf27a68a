package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"reflect"
	"sort"
	"strings"
	"syscall"

	"github.com/coreos/go-systemd/v22/daemon"
)

// liveKeys are the settings `systemctl reload swanpathd` (SIGHUP) applies
// in place; every other one (EAL, ports, crypto, sockets, fast path
// sizes) is read at start only and needs `systemctl restart swanpathd`.
var liveKeys = map[string]bool{"log.level": true}

// configKeys flattens c into "section.key" -> value; the ports count as
// one key ("port").
func configKeys(c Config) map[string]string {
	out := map[string]string{}
	v := reflect.ValueOf(c)
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		sec := strings.Split(t.Field(i).Tag.Get("toml"), ",")[0]
		fv := v.Field(i)
		if fv.Kind() != reflect.Struct {
			out[sec] = fmt.Sprint(fv.Interface())
			continue
		}
		for j := 0; j < fv.NumField(); j++ {
			key := strings.Split(fv.Type().Field(j).Tag.Get("toml"), ",")[0]
			out[sec+"."+key] = fmt.Sprint(fv.Field(j).Interface())
		}
	}
	return out
}

// configDiff lists the keys whose value differs between a and b, split
// into those reload applies and those that need a restart.
func configDiff(a, b Config) (live, restart []string) {
	ka, kb := configKeys(a), configKeys(b)
	for k, va := range ka {
		if kb[k] == va {
			continue
		}
		if liveKeys[k] {
			live = append(live, k)
		} else {
			restart = append(restart, k)
		}
	}
	sort.Strings(live)
	sort.Strings(restart)
	return live, restart
}

// reloader re-reads the configuration file on SIGHUP.
type reloader struct {
	log   *slog.Logger
	path  string
	level *slog.LevelVar
	cur   Config // as running
}

// reload reads the file again and applies what can change live. A file
// with errors changes nothing. It returns the keys applied and those that
// wait for a restart.
func (r *reloader) reload() (live, restart []string, err error) {
	_, _ = daemon.SdNotify(false, daemon.SdNotifyReloading)
	defer func() { _, _ = daemon.SdNotify(false, daemon.SdNotifyReady) }()
	next, err := loadConfig(r.path)
	if err != nil {
		r.log.Error("reload: configuration refused, nothing changed", "err", err)
		return nil, nil, err
	}
	live, restart = configDiff(r.cur, next)
	for _, k := range live {
		switch k {
		case "log.level":
			var lv slog.Level
			_ = lv.UnmarshalText([]byte(next.Log.Level))
			r.level.Set(lv)
			r.cur.Log.Level = next.Log.Level
		}
	}
	if len(live)+len(restart) == 0 {
		r.log.Info("reload: configuration unchanged", "config", r.path)
		return nil, nil, nil
	}
	if len(live) > 0 {
		r.log.Info("reload: applied", "keys", strings.Join(live, ","))
	}
	if len(restart) > 0 {
		r.log.Warn("reload: changed, applied at the next restart (systemctl restart swanpathd)", "keys", strings.Join(restart, ","))
	}
	return live, restart, nil
}

// watch reloads on every SIGHUP until ctx ends.
func (r *reloader) watch(ctx context.Context) error {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-hup:
			_, _, _ = r.reload()
		}
	}
}
