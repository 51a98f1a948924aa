package datadog

import "testing"

func TestVolumeTypeSocket(t *testing.T) {
	cases := []struct {
		t         VolumeType
		socket    Socket
		directory bool
	}{
		{APMSocket, SocketAPM, false},
		{DSDSocket, SocketDSD, false},
		{APMSocketDirectory, SocketAPM, true},
		{DSDSocketDirectory, SocketDSD, true},
		{DatadogSocketsDirectory, SocketDSD, true},
	}
	for _, c := range cases {
		s, dir, ok := c.t.Socket()
		if !ok || s != c.socket || dir != c.directory {
			t.Errorf("%s.Socket() = %v,%v,%v; want %v,%v,true", c.t, s, dir, ok, c.socket, c.directory)
		}
	}
	for _, bad := range []string{"", "apmsocket", "APMSocket ", "Socket"} {
		if _, ok := ParseVolumeType(bad); ok {
			t.Errorf("ParseVolumeType(%q) accepted", bad)
		}
	}
	if len(VolumeTypeNames()) != len(VolumeTypes) {
		t.Fatal("VolumeTypeNames incomplete")
	}
}

func TestParseMode(t *testing.T) {
	for in, want := range map[string]Mode{"CSI": ModeCSI, " hostIP ": ModeHostIP, "socket": ModeSocket, "Auto": ModeAuto, "service": ModeService} {
		if got, ok := ParseMode(in); !ok || got != want {
			t.Errorf("ParseMode(%q) = %q,%v", in, got, ok)
		}
	}
	if _, ok := ParseMode("udp"); ok {
		t.Error("ParseMode accepted udp")
	}
}

func TestDefaults(t *testing.T) {
	if DefaultAPMSocketPath != "/var/run/datadog/apm.socket" || DefaultDSDSocketPath != "/var/run/datadog/dsd.socket" {
		t.Fatal("default socket paths drifted from Datadog's")
	}
	if UnixURL(DefaultAPMSocketPath) != "unix:///var/run/datadog/apm.socket" {
		t.Fatal("UnixURL")
	}
}
