package main

import (
	"encoding/json"
	"fmt"
	"strings"
)

// payloads are the messages the generator relays, shaped like a browser's: an offer of about 2.7 KB of SDP
// (audio, video and a data channel, as Chrome makes them), an answer of about 2.2 KB, and candidates of about
// 260 bytes on the wire.
type payloads struct {
	offer     json.RawMessage
	answer    json.RawMessage
	candidate json.RawMessage
}

func newPayloads() payloads {
	return payloads{
		offer:     description("offer", offerSDP()),
		answer:    description("answer", answerSDP()),
		candidate: json.RawMessage(`{"candidate":"candidate:842163049 1 udp 1677729535 203.0.113.7 61220 typ srflx raddr 192.168.1.23 rport 52364 generation 0 ufrag Vc3e network-id 1 network-cost 10","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"Vc3e"}`),
	}
}

// description is an RTCSessionDescription as JSON.
func description(typ, sdp string) json.RawMessage {
	b, err := json.Marshal(struct {
		Type string `json:"type"`
		SDP  string `json:"sdp"`
	}{typ, sdp})
	if err != nil {
		panic(err) // strings always marshal
	}
	return b
}

func offerSDP() string {
	b, line := session("4611731400430051336", "5e7a3b2c-8d1f-4c6e-9a0b-1f2e3d4c5b6a")
	media(line, "audio", 0, "111 63 9 0 8 13 110 126", []string{
		"a=rtpmap:111 opus/48000/2", "a=rtcp-fb:111 transport-cc", "a=fmtp:111 minptime=10;useinbandfec=1",
		"a=rtpmap:63 red/48000/2", "a=fmtp:63 111/111", "a=rtpmap:9 G722/8000", "a=rtpmap:0 PCMU/8000",
		"a=rtpmap:8 PCMA/8000", "a=rtpmap:13 CN/8000", "a=rtpmap:110 telephone-event/48000",
		"a=rtpmap:126 telephone-event/8000",
	}, "actpass")
	media(line, "video", 1, "96 97 102 103 104 105 106 107", []string{
		"a=rtpmap:96 VP8/90000", "a=rtcp-fb:96 goog-remb", "a=rtcp-fb:96 transport-cc", "a=rtcp-fb:96 ccm fir",
		"a=rtcp-fb:96 nack", "a=rtcp-fb:96 nack pli", "a=rtpmap:97 rtx/90000", "a=fmtp:97 apt=96",
		"a=rtpmap:102 H264/90000", "a=rtcp-fb:102 transport-cc", "a=rtcp-fb:102 nack pli",
		"a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f",
		"a=rtpmap:103 rtx/90000", "a=fmtp:103 apt=102", "a=rtpmap:104 VP9/90000", "a=fmtp:104 profile-id=0",
		"a=rtpmap:105 rtx/90000", "a=fmtp:105 apt=104", "a=rtpmap:106 AV1/90000", "a=rtpmap:107 rtx/90000",
		"a=fmtp:107 apt=106",
	}, "actpass")
	data(line, "actpass")
	return b.String()
}

func answerSDP() string {
	b, line := session("7316254103218864802", "0c9d8e7f-6a5b-4c3d-2e1f-0a9b8c7d6e5f")
	media(line, "audio", 0, "111 63 9 0 8 13 110 126", []string{
		"a=rtpmap:111 opus/48000/2", "a=rtcp-fb:111 transport-cc", "a=fmtp:111 minptime=10;useinbandfec=1",
		"a=rtpmap:63 red/48000/2", "a=fmtp:63 111/111", "a=rtpmap:9 G722/8000", "a=rtpmap:0 PCMU/8000",
		"a=rtpmap:8 PCMA/8000", "a=rtpmap:13 CN/8000", "a=rtpmap:110 telephone-event/48000",
	}, "active")
	media(line, "video", 1, "96 97 102 103", []string{
		"a=rtpmap:96 VP8/90000", "a=rtcp-fb:96 goog-remb", "a=rtcp-fb:96 transport-cc",
		"a=rtcp-fb:96 nack pli", "a=rtpmap:97 rtx/90000", "a=fmtp:97 apt=96",
		"a=rtpmap:102 H264/90000", "a=rtpmap:103 rtx/90000", "a=fmtp:103 apt=102",
	}, "active")
	data(line, "active")
	return b.String()
}

// session starts a session description with the lines Chrome's offers and answers begin with; line adds one.
func session(id, msid string) (*strings.Builder, func(string)) {
	b := new(strings.Builder)
	line := func(s string) { b.WriteString(s); b.WriteString("\r\n") }
	line("v=0")
	line("o=- " + id + " 2 IN IP4 127.0.0.1")
	line("s=-")
	line("t=0 0")
	line("a=group:BUNDLE 0 1 2")
	line("a=extmap-allow-mixed")
	line("a=msid-semantic: WMS " + msid)
	return b, line
}

func media(line func(string), kind string, mid int, formats string, attrs []string, setup string) {
	line(fmt.Sprintf("m=%s 9 UDP/TLS/RTP/SAVPF %s", kind, formats))
	line("c=IN IP4 0.0.0.0")
	line("a=rtcp:9 IN IP4 0.0.0.0")
	line("a=ice-ufrag:Vc3e")
	line("a=ice-pwd:Qm0cW1z9pXl3sGk7RtY2bN8d")
	line("a=ice-options:trickle")
	line("a=fingerprint:sha-256 4F:0B:1A:9C:2E:77:D3:5A:8B:C1:6E:02:F4:93:AD:18:5C:E0:7B:21:9F:44:D6:3A:0E:B8:71:CC:25:9D:E3:40")
	line("a=setup:" + setup)
	line(fmt.Sprintf("a=mid:%d", mid))
	line("a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level")
	line("a=extmap:3 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time")
	line("a=sendrecv")
	line(fmt.Sprintf("a=msid:5e7a3b2c-8d1f-4c6e-9a0b-1f2e3d4c5b6a %s-track-%d", kind, mid))
	line("a=rtcp-mux")
	for _, a := range attrs {
		line(a)
	}
	line(fmt.Sprintf("a=ssrc:%d cname:Zr8hWq2LkP0sT4vX", 1234567890+mid))
}

func data(line func(string), setup string) {
	line("m=application 9 UDP/DTLS/SCTP webrtc-datachannel")
	line("c=IN IP4 0.0.0.0")
	line("a=ice-ufrag:Vc3e")
	line("a=ice-pwd:Qm0cW1z9pXl3sGk7RtY2bN8d")
	line("a=ice-options:trickle")
	line("a=fingerprint:sha-256 4F:0B:1A:9C:2E:77:D3:5A:8B:C1:6E:02:F4:93:AD:18:5C:E0:7B:21:9F:44:D6:3A:0E:B8:71:CC:25:9D:E3:40")
	line("a=setup:" + setup)
	line("a=mid:2")
	line("a=sctp-port:5000")
	line("a=max-message-size:262144")
}
