package metadata

import (
	"context"
	"log/slog"
	"syscall"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// SlogZap returns a zap logger for the embedded etcd that writes its
// warnings and errors to log. A fatal entry (etcd exits the process after
// it, as when a WAL write fails for lack of space) is logged with the free
// space of dir, so that an exit for a full disk says so.
func SlogZap(log *slog.Logger, dir string) *zap.Logger {
	return zap.New(&slogCore{log: log, dir: dir, min: zapcore.WarnLevel})
}

type slogCore struct {
	log    *slog.Logger
	dir    string
	min    zapcore.Level
	fields []zapcore.Field
}

func (c *slogCore) Enabled(l zapcore.Level) bool { return l >= c.min }

func (c *slogCore) With(fields []zapcore.Field) zapcore.Core {
	cp := *c
	cp.fields = append(append([]zapcore.Field(nil), c.fields...), fields...)
	return &cp
}

func (c *slogCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *slogCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range c.fields {
		f.AddTo(enc)
	}
	for _, f := range fields {
		f.AddTo(enc)
	}
	attrs := make([]any, 0, 2*len(enc.Fields)+4)
	attrs = append(attrs, "component", "etcd")
	for k, v := range enc.Fields {
		attrs = append(attrs, k, v)
	}
	level := slog.LevelWarn
	if e.Level >= zapcore.ErrorLevel {
		level = slog.LevelError
	}
	msg := e.Message
	if e.Level >= zapcore.DPanicLevel {
		msg = "etcd is exiting: " + msg
		var st syscall.Statfs_t
		if err := syscall.Statfs(c.dir, &st); err == nil {
			attrs = append(attrs, "dir", c.dir, "free_bytes", int64(st.Bavail)*int64(st.Bsize))
		}
	}
	c.log.Log(context.Background(), level, msg, attrs...)
	return nil
}

func (c *slogCore) Sync() error { return nil }
