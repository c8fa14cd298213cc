package echo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"

	"tandem/protocol"
)

// call is one caller's call: its own peer connection.
type call struct {
	s    *session
	peer string
	pc   *webrtc.PeerConnection

	mu       sync.Mutex
	answered bool              // the first answer is sent: candidates may follow it
	pending  []json.RawMessage // local candidates gathered before that
	ended    bool
	limit    *time.Timer
	loops    sync.WaitGroup // the call's own goroutines (RTP and RTCP loops)
	echoes   map[*webrtc.RTPReceiver]*echoTrack
}

// echoTrack sends one incoming track back.
type echoTrack struct {
	k      *call
	sender *webrtc.RTPSender

	mu     sync.Mutex
	local  *webrtc.TrackLocalStaticRTP
	remote *webrtc.TrackRemote
	lastKF time.Time // the last keyframe request sent to the caller
}

// offer handles an offer from name: a new call, or a renegotiation of the call in progress.
func (s *session) offer(name string, raw json.RawMessage) {
	log := s.echo.log.With("caller", name)
	var sd webrtc.SessionDescription
	if err := json.Unmarshal(raw, &sd); err != nil || sd.Type != webrtc.SDPTypeOffer {
		log.Info("refusing a malformed offer", "err", err)
		s.send(func(ctx context.Context) error { return s.c.SendLeave(ctx, name, protocol.ReasonDeclined) })
		return
	}
	s.mu.Lock()
	k := s.byName[name]
	s.mu.Unlock()
	if k == nil {
		var err error
		if k, err = s.newCall(name); err != nil {
			log.Warn("cannot answer", "err", err)
			s.send(func(ctx context.Context) error { return s.c.SendLeave(ctx, name, protocol.ReasonDeclined) })
			return
		}
		log.Info("answering a call")
	}
	if err := k.answer(sd); err != nil {
		log.Warn("cannot answer", "err", err)
		k.end(protocol.ReasonHangup, true)
	}
}

func (s *session) newCall(name string) (*call, error) {
	pc, err := s.echo.api.NewPeerConnection(webrtc.Configuration{ICEServers: s.iceServers})
	if err != nil && len(s.iceServers) > 0 {
		// A server URL pion cannot use must not stop the echo test: host candidates may still do.
		s.echo.log.Warn("ICE servers refused; answering without them", "err", err)
		pc, err = s.echo.api.NewPeerConnection(webrtc.Configuration{})
	}
	if err != nil {
		return nil, fmt.Errorf("echo: new peer connection: %w", err)
	}
	s.echo.open.Inc()
	s.echo.calls.Inc()
	s.calls.Add(1)
	k := &call{s: s, peer: name, pc: pc, echoes: make(map[*webrtc.RTPReceiver]*echoTrack)}

	s.mu.Lock()
	s.byName[name] = k
	s.mu.Unlock()

	k.limit = time.AfterFunc(s.echo.limit, func() {
		s.echo.log.Info("time limit reached; hanging up", "caller", name, "limit", s.echo.limit)
		k.end(protocol.ReasonHangup, true)
	})
	pc.OnICECandidate(k.onCandidate)
	pc.OnConnectionStateChange(func(st webrtc.PeerConnectionState) {
		s.echo.log.Debug("connection state", "caller", name, "state", st)
		if st == webrtc.PeerConnectionStateFailed {
			k.end(protocol.ReasonHangup, true)
		}
	})
	pc.OnTrack(k.onTrack)
	pc.OnDataChannel(func(dc *webrtc.DataChannel) {
		dc.OnMessage(func(msg webrtc.DataChannelMessage) {
			var err error
			if msg.IsString {
				err = dc.SendText(string(msg.Data))
			} else {
				err = dc.Send(msg.Data)
			}
			if err != nil {
				s.echo.log.Debug("data channel echo failed", "caller", name, "err", err)
			}
		})
	})
	return k, nil
}

// answer applies an offer and sends the answer, first sending back a track for each one the caller sends.
func (k *call) answer(offer webrtc.SessionDescription) error {
	if err := k.pc.SetRemoteDescription(offer); err != nil {
		return fmt.Errorf("set offer: %w", err)
	}
	if err := k.addEchoTracks(); err != nil {
		return err
	}
	answer, err := k.pc.CreateAnswer(nil)
	if err != nil {
		return fmt.Errorf("create answer: %w", err)
	}
	if err := k.pc.SetLocalDescription(answer); err != nil {
		return fmt.Errorf("set answer: %w", err)
	}
	raw, err := json.Marshal(k.pc.LocalDescription())
	if err != nil {
		return fmt.Errorf("encode answer: %w", err)
	}
	k.s.send(func(ctx context.Context) error { return k.s.c.SendAnswer(ctx, k.peer, raw) })

	k.mu.Lock()
	k.answered = true
	pending := k.pending
	k.pending = nil
	k.mu.Unlock()
	for _, c := range pending {
		k.s.send(func(ctx context.Context) error { return k.s.c.SendCandidate(ctx, k.peer, c) })
	}
	return nil
}

// addEchoTracks gives each transceiver that receives media and has no sender yet a track to send it back on. The
// track takes the first codec negotiated for the transceiver; onTrack switches it if the caller sends another.
func (k *call) addEchoTracks() error {
	for _, t := range k.pc.GetTransceivers() {
		if t.Sender() != nil || t.Receiver() == nil {
			continue
		}
		if d := t.Direction(); d != webrtc.RTPTransceiverDirectionRecvonly && d != webrtc.RTPTransceiverDirectionSendrecv {
			continue
		}
		codecs := t.Receiver().GetParameters().Codecs
		if len(codecs) == 0 {
			continue
		}
		local, err := webrtc.NewTrackLocalStaticRTP(codecs[0].RTPCodecCapability, t.Kind().String(), "echo")
		if err != nil {
			return fmt.Errorf("echo track: %w", err)
		}
		sender, err := k.pc.AddTrack(local)
		if err != nil {
			return fmt.Errorf("add echo track: %w", err)
		}
		// AddTrack took the first free transceiver of the kind: find which, to know whose media goes back on it.
		for _, t := range k.pc.GetTransceivers() {
			if t.Sender() == sender && t.Receiver() != nil {
				et := &echoTrack{k: k, sender: sender, local: local}
				k.mu.Lock()
				k.echoes[t.Receiver()] = et
				k.mu.Unlock()
				k.goLoop(et.readRTCP)
			}
		}
	}
	return nil
}

// goLoop runs f in a goroutine that end waits for, unless the call has ended.
func (k *call) goLoop(f func()) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !k.ended {
		k.loops.Go(f)
	}
}

// onCandidate sends a local candidate to the caller, after the answer. The end of candidates is not sent: the
// tutorial's client cannot take a null candidate.
func (k *call) onCandidate(c *webrtc.ICECandidate) {
	if c == nil {
		return
	}
	raw, err := json.Marshal(c.ToJSON())
	if err != nil {
		return
	}
	k.mu.Lock()
	if k.ended {
		k.mu.Unlock()
		return
	}
	if !k.answered {
		k.pending = append(k.pending, raw)
		k.mu.Unlock()
		return
	}
	k.mu.Unlock()
	k.s.send(func(ctx context.Context) error { return k.s.c.SendCandidate(ctx, k.peer, raw) })
}

// addCandidate adds a candidate from the caller; null or an empty candidate is the end of candidates.
func (k *call) addCandidate(raw json.RawMessage) {
	var c webrtc.ICECandidateInit
	if len(raw) == 0 || string(raw) == "null" {
		return
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		k.s.echo.log.Debug("malformed candidate", "caller", k.peer, "err", err)
		return
	}
	if c.Candidate == "" {
		return
	}
	if err := k.pc.AddICECandidate(c); err != nil {
		k.s.echo.log.Debug("candidate refused", "caller", k.peer, "err", err)
	}
}

// onTrack sends an incoming track back to the caller, packet by packet.
func (k *call) onTrack(remote *webrtc.TrackRemote, receiver *webrtc.RTPReceiver) {
	k.mu.Lock()
	et := k.echoes[receiver]
	k.mu.Unlock()
	log := k.s.echo.log.With("caller", k.peer, "kind", remote.Kind(), "codec", remote.Codec().MimeType)
	if et == nil {
		log.Debug("a track with no way back; dropping it")
		k.goLoop(func() { drain(remote) })
		return
	}
	et.mu.Lock()
	taken := et.remote != nil
	et.mu.Unlock()
	if taken {
		// A second stream on one transceiver (a simulcast layer): one stream goes back, the others are read and
		// dropped, as mixing them on one track would garble the picture.
		log.Debug("another stream of a track that is already echoed; dropping it", "rid", remote.RID())
		k.goLoop(func() { drain(remote) })
		return
	}
	if err := et.setRemote(remote); err != nil {
		log.Warn("cannot echo the track", "err", err)
		k.goLoop(func() { drain(remote) })
		return
	}
	log.Debug("echoing a track")
	k.goLoop(et.forward)
}

// setRemote makes the echo track carry remote's codec, and asks for a keyframe so the caller's picture comes back
// at once.
func (et *echoTrack) setRemote(remote *webrtc.TrackRemote) error {
	et.mu.Lock()
	defer et.mu.Unlock()
	et.remote = remote
	codec := remote.Codec().RTPCodecCapability
	if !strings.EqualFold(codec.MimeType, et.local.Codec().MimeType) || codec.SDPFmtpLine != et.local.Codec().SDPFmtpLine {
		local, err := webrtc.NewTrackLocalStaticRTP(codec, et.local.ID(), et.local.StreamID())
		if err != nil {
			return err
		}
		if err := et.sender.ReplaceTrack(local); err != nil {
			return err
		}
		et.local = local
	}
	et.requestKeyframeLocked(true)
	return nil
}

// forward copies the RTP packets of the remote track to the echo track until the call ends. Packets keep their
// payload, sequence numbers and timestamps; pion rewrites SSRC and payload type for the way back.
func (et *echoTrack) forward() {
	et.mu.Lock()
	remote, local := et.remote, et.local
	et.mu.Unlock()
	buf := make([]byte, 1500)
	for {
		n, _, err := remote.Read(buf)
		if err != nil {
			return
		}
		if _, err := local.Write(buf[:n]); err != nil && !errors.Is(err, io.ErrClosedPipe) {
			return
		}
	}
}

// readRTCP reads what the caller says about the media it receives back, so that pion's interceptors (NACK,
// reports) work, and passes keyframe requests on to the caller's sender: the picture it asks for is its own.
func (et *echoTrack) readRTCP() {
	for {
		pkts, _, err := et.sender.ReadRTCP()
		if err != nil {
			return
		}
		for _, p := range pkts {
			switch p.(type) {
			case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
				et.mu.Lock()
				et.requestKeyframeLocked(false)
				et.mu.Unlock()
			}
		}
	}
}

// requestKeyframeLocked sends a PLI for the remote video track, at most every half second unless forced.
func (et *echoTrack) requestKeyframeLocked(force bool) {
	if et.remote == nil || et.remote.Kind() != webrtc.RTPCodecTypeVideo {
		return
	}
	if !force && time.Since(et.lastKF) < 500*time.Millisecond {
		return
	}
	et.lastKF = time.Now()
	pli := &rtcp.PictureLossIndication{MediaSSRC: uint32(et.remote.SSRC())}
	_ = et.k.pc.WriteRTCP([]rtcp.Packet{pli})
}

// drain reads a track nobody forwards, so that pion's buffers do not fill, until the call ends.
func drain(remote *webrtc.TrackRemote) {
	buf := make([]byte, 1500)
	for {
		if _, _, err := remote.Read(buf); err != nil {
			return
		}
	}
}

// end ends the call once: it sends the caller a leave with reason if leave is set, and releases the peer
// connection in the background (the echo peer's Run waits for it).
func (k *call) end(reason string, leave bool) {
	k.mu.Lock()
	if k.ended {
		k.mu.Unlock()
		return
	}
	k.ended = true
	k.pending = nil
	k.mu.Unlock()

	s := k.s
	s.mu.Lock()
	if s.byName[k.peer] == k {
		delete(s.byName, k.peer)
	}
	s.mu.Unlock()
	k.limit.Stop()
	if leave {
		s.send(func(ctx context.Context) error { return s.c.SendLeave(ctx, k.peer, reason) })
	}
	s.echo.log.Info("call ended", "caller", k.peer, "told", leave)

	// GracefulClose waits for pion's goroutines, which must not be done from one of its callbacks (end may be
	// called from one): close in a goroutine of its own. The session waits for it before it returns.
	go func() {
		defer s.calls.Done()
		if err := k.pc.GracefulClose(); err != nil {
			s.echo.log.Debug("closing peer connection", "caller", k.peer, "err", err)
		}
		k.loops.Wait()
		s.echo.open.Dec()
	}()
}
