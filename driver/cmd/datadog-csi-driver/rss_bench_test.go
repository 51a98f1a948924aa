package main

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/datadog-csi/datadog-csi/driver/internal/testenv"
)

// BenchmarkIdleRSS builds the driver binary as the image ships it and
// reports its resident set (VmRSS of /proc/<pid>/status) once it serves,
// with health and metrics on and one /healthz-equivalent Probe answered,
// after the client disconnected and a 2s settle. The "grpcnotrace" variant drops grpc's
// golang.org/x/net/trace (and html/template with it); file-backed pages of
// the binary dominate RSS, so binary size matters. Target: <= 12 MiB.
func BenchmarkIdleRSS(b *testing.B) {
	for _, variant := range []struct{ name, tags string }{{"default", ""}, {"grpcnotrace", "grpcnotrace"}} {
		b.Run(variant.name, func(b *testing.B) {
			binary := filepath.Join(b.TempDir(), "datadog-csi-driver")
			build := exec.Command("go", "build", "-tags="+variant.tags, "-trimpath", "-ldflags=-s -w", "-o", binary, ".")
			build.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := build.CombinedOutput(); err != nil {
				b.Fatalf("go build: %v\n%s", err, out)
			}
			endpoint := filepath.Join(testenv.ShortTempDir(b), "csi.sock")
			cmd := exec.Command(binary, "--node-id=bench", "--csi-endpoint=unix://"+endpoint,
				"--health-address=127.0.0.1:0", "--metrics-address=localhost:0")
			var stderr strings.Builder
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				b.Fatal(err)
			}
			defer func() { cmd.Process.Kill(); cmd.Wait() }()
			conn, err := grpc.NewClient("unix:"+endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close()
			deadline := time.Now().Add(10 * time.Second)
			for {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				_, err := csi.NewIdentityClient(conn).Probe(ctx, &csi.ProbeRequest{})
				cancel()
				if err == nil {
					break
				}
				if time.Now().After(deadline) {
					b.Fatalf("driver not serving: %v\n%s", err, stderr.String())
				}
				time.Sleep(20 * time.Millisecond)
			}
			conn.Close() // the kubelet connects per call: idle means no connection
			time.Sleep(2 * time.Second)
			status := procStatusKiB(b, cmd.Process.Pid)
			for b.Loop() {
			}
			b.ReportMetric(float64(status["VmRSS"])/1024, "MiB-RSS")
			b.ReportMetric(float64(status["RssFile"])/1024, "MiB-RSS-file")
			b.ReportMetric(float64(status["RssAnon"])/1024, "MiB-RSS-anon")
			b.ReportMetric(0, "ns/op")
			if info, err := os.Stat(binary); err == nil {
				b.ReportMetric(float64(info.Size())/(1<<20), "MiB-binary")
			}
		})
	}
}

// procStatusKiB reads the kB fields of /proc/<pid>/status.
func procStatusKiB(b *testing.B, pid int) map[string]int {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	fields := map[string]int{}
	s := bufio.NewScanner(f)
	for s.Scan() {
		name, value, ok := strings.Cut(s.Text(), ":")
		if value, isKB := strings.CutSuffix(strings.TrimSpace(value), " kB"); ok && isKB {
			n, err := strconv.Atoi(value)
			if err != nil {
				b.Fatal(err)
			}
			fields[name] = n
		}
	}
	if fields["VmRSS"] == 0 {
		b.Fatal("no VmRSS in /proc/<pid>/status")
	}
	return fields
}
