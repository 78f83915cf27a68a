// Package pluginsock is swanpathd's end of the charon plugin socket: the
// wire format of docs/plugin-protocol.md (codec), a Server that dispatches
// the plugin's kernel_ipsec_t calls to a Handler and sends kernel events
// back, and a small Client that speaks the plugin's side (tests, benchmarks).
package pluginsock

import "fmt"

// Version is the protocol version in every frame header.
const Version = 1

// HeaderLen is the size of a frame header; MaxPayload the largest payload.
const (
	HeaderLen  = 12
	MaxPayload = 64 << 10
)

// DefaultSocket is where swanpathd listens unless configured otherwise.
const DefaultSocket = "/run/swanpath/charon.sock"

// Type is a message type.
type Type uint8

const (
	TypeHello         Type = 1
	TypeGetSPI        Type = 2
	TypeAddSA         Type = 3
	TypeUpdateSA      Type = 4
	TypeQuerySA       Type = 5
	TypeDelSA         Type = 6
	TypeFlushSAs      Type = 7
	TypeAddPolicy     Type = 8
	TypeQueryPolicy   Type = 9
	TypeDelPolicy     Type = 10
	TypeFlushPolicies Type = 11
	TypeReplayDone    Type = 12
	TypeResult        Type = 64
	TypeExpire        Type = 128
	TypeAcquire       Type = 129
	TypeMapping       Type = 130
)

var typeNames = map[Type]string{
	TypeHello: "HELLO", TypeGetSPI: "GET_SPI", TypeAddSA: "ADD_SA",
	TypeUpdateSA: "UPDATE_SA", TypeQuerySA: "QUERY_SA", TypeDelSA: "DEL_SA",
	TypeFlushSAs: "FLUSH_SAS", TypeAddPolicy: "ADD_POLICY",
	TypeQueryPolicy: "QUERY_POLICY", TypeDelPolicy: "DEL_POLICY",
	TypeFlushPolicies: "FLUSH_POLICIES", TypeReplayDone: "REPLAY_DONE", TypeResult: "RESULT",
	TypeExpire: "EXPIRE", TypeAcquire: "ACQUIRE", TypeMapping: "MAPPING",
}

func (t Type) String() string {
	if n, ok := typeNames[t]; ok {
		return n
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// IsRequest reports whether t is sent by the plugin and answered by RESULT.
func (t Type) IsRequest() bool { return t >= TypeHello && t <= TypeReplayDone }

// IsEvent reports whether t is an event sent by swanpathd.
func (t Type) IsEvent() bool { return t >= TypeExpire && t <= TypeMapping }

// Attribute types (docs/plugin-protocol.md, "Attributes").
const (
	attrSrc          = 1
	attrDst          = 2
	attrSPI          = 3
	attrProto        = 4
	attrMode         = 5
	attrReqid        = 6
	attrMark         = 7
	attrMarkMask     = 8
	attrIfID         = 9
	attrInbound      = 10
	attrEncap        = 11
	attrSrcPort      = 12
	attrDstPort      = 13
	attrEncAlg       = 14
	attrEncKey       = 15
	attrIntAlg       = 16
	attrIntKey       = 17
	attrICVLen       = 18
	attrReplayWindow = 19
	attrESN          = 20
	attrSoftBytes    = 21
	attrSoftPackets  = 22
	attrSoftTime     = 23
	attrHardBytes    = 24
	attrHardPackets  = 25
	attrHardTime     = 26
	attrNewSrc       = 27
	attrNewDst       = 28
	attrNewSrcPort   = 29
	attrNewDstPort   = 30
	attrNewEncap     = 31
	attrSelSrc       = 40
	attrSelDst       = 41
	attrSelProto     = 42
	attrSelSport     = 43
	attrSelDport     = 44
	attrDir          = 45
	attrAction       = 46
	attrPriority     = 47
	attrTmplSrc      = 48
	attrTmplDst      = 49
	attrStatus       = 60
	attrMessage      = 61
	attrBytes        = 62
	attrPackets      = 63
	attrUseTime      = 64
	attrHard         = 70
	attrName         = 80
	attrPID          = 81
	attrReplayed     = 82
	attrReplayFailed = 83
)

// Status is the outcome of a request, carried in RESULT.
type Status uint32

const (
	StatusOK          Status = 0
	StatusFailed      Status = 1
	StatusNotFound    Status = 2
	StatusExists      Status = 3
	StatusUnsupported Status = 4
	StatusInvalid     Status = 5
)

func (s Status) String() string {
	switch s {
	case StatusOK:
		return "OK"
	case StatusFailed:
		return "FAILED"
	case StatusNotFound:
		return "NOT_FOUND"
	case StatusExists:
		return "EXISTS"
	case StatusUnsupported:
		return "UNSUPPORTED"
	case StatusInvalid:
		return "INVALID"
	}
	return fmt.Sprintf("status(%d)", uint32(s))
}
