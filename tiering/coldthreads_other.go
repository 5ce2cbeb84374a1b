//go:build !linux

package tiering

const coldThreadsSupported = false

func niceThread(int) {}
