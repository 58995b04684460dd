package checksum

import "testing"

func TestRoundTrip(t *testing.T) {
	s := Of([]byte("123456789"))
	if s != "crc32c:e3069283" { // the CRC-32C check value
		t.Fatalf("Of = %s", s)
	}
	v, err := Parse(s)
	if err != nil || Format(v) != s {
		t.Fatalf("Parse = %x, %v", v, err)
	}
	for _, bad := range []string{"", "crc32:e3069283", "crc32c:e30692", "crc32c:zzzzzzzz"} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
}
