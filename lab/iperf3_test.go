package lab

import (
	"reflect"
	"testing"
)

// A --bidir run with --get-server-output (iperf 3.12), cut to two intervals:
// each side's receiving blocks are sender=false.
const bidirJSON = `{
 "intervals": [
  {"sum": {"start": 0, "end": 1.0, "bytes": 100, "sender": true},
   "sum_bidir_reverse": {"start": 0, "end": 1.0, "bytes": 200, "sender": false}},
  {"sum": {"start": 1.0, "end": 2.0, "bytes": 110, "sender": true},
   "sum_bidir_reverse": {"start": 1.0, "end": 2.0, "bytes": 0, "sender": false}}
 ],
 "server_output_json": {"intervals": [
  {"sum": {"start": 0, "end": 1.0, "bytes": 90, "sender": false},
   "sum_bidir_reverse": {"start": 0, "end": 1.0, "bytes": 210, "sender": true}},
  {"sum": {"start": 1.0, "end": 2.0, "bytes": 120, "sender": false},
   "sum_bidir_reverse": {"start": 1.0, "end": 2.0, "bytes": 5, "sender": true}}
 ]}
}`

func TestParseIperfIntervals(t *testing.T) {
	run, err := parseIperfIntervals([]byte(bidirJSON))
	if err != nil {
		t.Fatal(err)
	}
	want := IperfRun{
		Forward: []IperfInterval{{0, 1, 90}, {1, 2, 120}},
		Reverse: []IperfInterval{{0, 1, 200}, {1, 2, 0}},
	}
	if !reflect.DeepEqual(run, want) {
		t.Fatalf("got %+v, want %+v", run, want)
	}
	for _, bad := range []string{
		`{"error": "unable to connect to server"}`,
		`{"intervals": []}`, // no server output
		`{"intervals": [{"sum": {"bytes": 1}}], "server_output_json": {"intervals": []}}`, // no sender field
		`not json`,
	} {
		if _, err := parseIperfIntervals([]byte(bad)); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}
