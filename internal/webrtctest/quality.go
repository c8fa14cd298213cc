package webrtctest

import (
	"time"

	"github.com/pion/webrtc/v4"

	"tandem/protocol"
)

// QualityReport is the report object of a quality message (protocol.TypeQuality) about p's call, made from the
// peer connection's statistics as the web client makes it: the path and transport of the selected candidate pair
// (relay when either end of it is a TURN relay), its round-trip time, the share of received packets lost, and
// ice, the time ICE took as the caller measured it. phase is protocol.QualityConnected, QualityEnded or
// QualityFailed.
func (p *Peer) QualityReport(phase string, ice time.Duration) map[string]any {
	report := p.PC.GetStats()
	q := map[string]any{"phase": phase, "iceMs": ice.Milliseconds()}
	var pair *webrtc.ICECandidatePairStats
	var received, lost int64
	for _, s := range report {
		switch s := s.(type) {
		case webrtc.ICECandidatePairStats:
			if s.Nominated && s.State == webrtc.StatsICECandidatePairStateSucceeded {
				pair = &s
			}
		case webrtc.InboundRTPStreamStats:
			received += int64(s.PacketsReceived)
			lost += max(int64(s.PacketsLost), 0)
		}
	}
	if received+lost > 0 {
		q["lossPct"] = 100 * float64(lost) / float64(received+lost)
	}
	if pair == nil {
		return q
	}
	local, _ := report[pair.LocalCandidateID].(webrtc.ICECandidateStats)
	remote, _ := report[pair.RemoteCandidateID].(webrtc.ICECandidateStats)
	q["path"], q["transport"] = protocol.PathDirect, local.Protocol
	if local.CandidateType == webrtc.ICECandidateTypeRelay || remote.CandidateType == webrtc.ICECandidateTypeRelay {
		q["path"] = protocol.PathRelay
		if local.CandidateType == webrtc.ICECandidateTypeRelay && local.RelayProtocol != "" {
			q["transport"] = local.RelayProtocol
		}
	}
	if pair.CurrentRoundTripTime > 0 {
		q["rttMs"] = pair.CurrentRoundTripTime * 1000
	}
	return q
}
