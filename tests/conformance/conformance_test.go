// Package conformance runs containerd's snapshotter conformance suite
// (github.com/containerd/containerd/snapshots/testsuite) against estargz-snapshotter
// through containerd's snapshots proxy, with a fresh daemon and root per test.
//
// Build it in GOPATH mode against Debian's containerd sources; run.sh does that.
package conformance

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/containerd/snapshots/proxy"
	"github.com/containerd/containerd/snapshots/testsuite"
	"google.golang.org/grpc"
)

// startDaemon runs the daemon binary on root with its socket beside root, and returns a
// snapshotter talking to it plus a function that stops it with SIGTERM.
func startDaemon(ctx context.Context, root string) (snapshots.Snapshotter, func() error, error) {
	bin := os.Getenv("ESTARGZ_SNAPSHOTTER_BIN")
	if bin == "" {
		return nil, nil, fmt.Errorf("ESTARGZ_SNAPSHOTTER_BIN is not set")
	}
	socket := filepath.Join(filepath.Dir(root), "daemon.sock")
	logFile, err := os.Create(filepath.Join(filepath.Dir(root), "daemon.log"))
	if err != nil {
		return nil, nil, err
	}
	cmd := exec.Command(bin, "--config", "/dev/null", "--root", root, "--address", socket, "--log-level", "warn")
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, nil, err
	}
	stop := func() error {
		defer logFile.Close()
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			return err
		}
		return cmd.Wait()
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(socket); err == nil {
			break
		}
		if time.Now().After(deadline) {
			stop()
			return nil, nil, fmt.Errorf("daemon socket %s did not appear", socket)
		}
		time.Sleep(20 * time.Millisecond)
	}
	dialer := func(ctx context.Context, addr string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", addr)
	}
	// As containerd's own dialer does: a socket path is not a valid HTTP/2 :authority.
	conn, err := grpc.DialContext(ctx, socket, grpc.WithInsecure(), grpc.WithContextDialer(dialer),
		grpc.WithAuthority("localhost"))
	if err != nil {
		stop()
		return nil, nil, err
	}
	sn := proxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), "stargz")
	return sn, func() error {
		conn.Close()
		return stop()
	}, nil
}

func TestEstargzSnapshotterConformance(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the snapshotter test suite mounts: needs root")
	}
	testsuite.SnapshotterSuite(t, "EstargzSnapshotter", startDaemon)
}
