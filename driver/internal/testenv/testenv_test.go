package testenv

import (
	"reflect"
	"strings"
	"testing"
)

func TestMountsUnderParsesMountinfo(t *testing.T) {
	table := strings.Join([]string{
		`22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw`,
		`40 22 8:1 /run/datadog /tmp/t/pod\040a/mount ro,nosuid,nodev,noexec - ext4 /dev/sda1 rw`,
		`41 22 8:1 /run/datadog /tmp/t/b ro - ext4 /dev/sda1 rw`,
		`42 22 8:1 /run/datadog /tmp/tt ro - ext4 /dev/sda1 rw`,
		`43 41 8:1 /run/datadog /tmp/t/b/deeper ro - ext4 /dev/sda1 rw`,
	}, "\n")
	got, err := mountsUnder(strings.NewReader(table), "/tmp/t")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"/tmp/t/pod a/mount", "/tmp/t/b/deeper", "/tmp/t/b"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, want %q (deepest first, escapes undone, /tmp/tt excluded)", got, want)
	}
	if _, err := mountsUnder(strings.NewReader("garbage"), "/"); err == nil {
		t.Error("a malformed line must be an error")
	}
}
