package echo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"

	"tandem/client"
	"tandem/protocol"
)

// call is one caller's call, from its first offer until it is released. Its messages (offers, candidates) are
// handled one by one by its own goroutine (run), which owns its peer connection; a new peer connection of the
// caller (an offer of another SDP session: a reloaded page that resumed its session) replaces the old one.
type call struct {
	s       *session
	peer    string
	queue   chan *client.Message // offers and candidates for run
	queued  atomic.Int64         // bytes of the messages in queue
	done    chan struct{}        // closed by end
	told    chan struct{}        // closed by run once the caller is told (or is not to be)
	limit   *time.Timer          // the call's time limit
	connect *time.Timer          // ConnectTimeout, stopped when the media connection is up

	// offer rate: a token bucket, used by the read loop only
	offerTokens float64
	offerAt     time.Time

	mu    sync.Mutex
	ended bool
	tell  string // the reason of the leave to send the caller, "" for none

	conn *peerConn // run's own
}

// newCallLocked registers a call for name and starts its goroutine; s.mu is held. No pion work is done here:
// the call's goroutine makes the peer connection.
func (s *session) newCallLocked(name string) *call {
	e := s.echo
	k := &call{
		s:           s,
		peer:        name,
		queue:       make(chan *client.Message, callQueueMessages),
		done:        make(chan struct{}),
		told:        make(chan struct{}),
		offerTokens: offerBurst,
		offerAt:     time.Now(),
	}
	s.byName[name] = k
	s.live++
	s.calls.Add(1)
	e.calls.Inc()
	e.log.Info("answering a call", "caller", name)
	k.limit = time.AfterFunc(e.limit, func() {
		e.log.Info("time limit reached; hanging up", "caller", name, "limit", e.limit)
		k.end(protocol.ReasonHangup)
	})
	k.connect = time.AfterFunc(e.connectTimeout, func() {
		if k.end(protocol.ReasonHangup) {
			e.log.Info("no media connection in time; hung up", "caller", name, "timeout", e.connectTimeout)
			e.cut.WithLabelValues(cutNoMedia).Inc()
		}
	})
	go k.run()
	return k
}

// takeOffer takes one offer from the call's bucket, reporting false when the caller offers too fast.
func (k *call) takeOffer() bool {
	now := time.Now()
	k.offerTokens = min(offerBurst, k.offerTokens+float64(now.Sub(k.offerAt))/float64(offerInterval))
	k.offerAt = now
	if k.offerTokens < 1 {
		return false
	}
	k.offerTokens--
	return true
}

// enqueue hands m to the call's goroutine without waiting; a call whose queue is full is ended.
func (k *call) enqueue(m *client.Message) {
	n := int64(len(m.Offer) + len(m.Candidate))
	if k.queued.Add(n) > callQueueBytes {
		k.s.echo.log.Info("too many messages waiting; hanging up", "caller", k.peer, "bytes", k.queued.Load())
		k.cut()
		return
	}
	select {
	case k.queue <- m:
	default:
		k.s.echo.log.Info("too many messages waiting; hanging up", "caller", k.peer, "messages", len(k.queue))
		k.cut()
	}
}

// cut ends a call for flooding: the caller is told, and its offers are refused for a while.
func (k *call) cut() {
	s := k.s
	s.mu.Lock()
	s.coolLocked(k.peer)
	s.mu.Unlock()
	if k.end(protocol.ReasonHangup) {
		s.echo.cut.WithLabelValues(cutFlood).Inc()
	}
}

// end ends the call once, without waiting: the call's goroutine tells the caller (a leave with reason tell, unless
// it is "") and releases the peer connection. The caller's next offer starts a new call. It reports whether this
// was the call's end (false: it had ended already).
func (k *call) end(tell string) bool {
	k.mu.Lock()
	if k.ended {
		k.mu.Unlock()
		return false
	}
	k.ended = true
	k.tell = tell
	k.mu.Unlock()

	s := k.s
	s.mu.Lock()
	if s.byName[k.peer] == k {
		delete(s.byName, k.peer)
	}
	s.mu.Unlock()
	k.limit.Stop()
	k.connect.Stop()
	close(k.done)
	s.echo.log.Info("call ended", "caller", k.peer, "told", tell != "")
	return true
}

// run handles the call's messages until it ends, then tells the caller and releases everything.
func (k *call) run() {
	defer k.release()
	for {
		select {
		case <-k.done:
			return
		case m := <-k.queue:
			k.queued.Add(-int64(len(m.Offer) + len(m.Candidate)))
			k.handle(m)
		}
	}
}

// handle applies one message of the caller's; a panic while doing so ends this call alone.
func (k *call) handle(m *client.Message) {
	defer k.contain("handling a message")
	if h := k.s.echo.beforeHandle; h != nil {
		h(k.peer, m.Type)
	}
	switch m.Type {
	case protocol.TypeOffer:
		k.onOffer(m.Offer)
	case protocol.TypeCandidate:
		k.onCandidate(m.Candidate)
	}
}

// contain, deferred in every goroutine and callback of a call, turns a panic into the end of that call: it is
// logged with its stack and counted (tandem_echo_calls_cut_total{reason="panic"}), and every other call, and the
// server the echo peer runs in, carry on.
func (k *call) contain(where string) {
	v := recover()
	if v == nil {
		return
	}
	e := k.s.echo
	e.log.Error("panic in the echo peer: the call is ended", "caller", k.peer, "in", where, "panic", v, "stack", string(debug.Stack()))
	e.cut.WithLabelValues(cutPanic).Inc()
	k.end(protocol.ReasonHangup)
}

// release tells the caller the call ended, if it is to be told, closes the peer connection and waits for the
// call's goroutines.
func (k *call) release() {
	s := k.s
	k.mu.Lock()
	tell := k.tell
	k.mu.Unlock()
	if tell != "" {
		s.send(func(ctx context.Context) error { return s.c.SendLeave(ctx, k.peer, tell) })
	}
	close(k.told)
	if k.conn != nil {
		k.conn.close()
		k.conn = nil
	}
	for len(k.queue) > 0 { // messages that came after the end: nothing holds them but the queue
		<-k.queue
	}
	s.mu.Lock()
	s.live--
	s.mu.Unlock()
	s.calls.Done()
}

// onOffer applies an offer and answers it: on the call's peer connection, or on a new one if there is none yet
// or the offer comes from a new peer connection of the caller.
func (k *call) onOffer(raw json.RawMessage) {
	log := k.s.echo.log.With("caller", k.peer)
	var sd webrtc.SessionDescription
	if err := json.Unmarshal(raw, &sd); err != nil || sd.Type != webrtc.SDPTypeOffer {
		log.Info("refusing a malformed offer", "err", err)
		k.end(protocol.ReasonDeclined)
		return
	}
	id := sdpSessionID(sd.SDP)
	if k.conn != nil && id != k.conn.sessionID {
		log.Info("a new peer connection of the caller; replacing the call's")
		k.conn.close()
		k.conn = nil
		k.connect.Reset(k.s.echo.connectTimeout)
	}
	if k.conn == nil {
		c, err := k.newConn(id)
		if err != nil {
			log.Warn("cannot answer", "err", err)
			k.end(protocol.ReasonDeclined)
			return
		}
		k.conn = c
	}
	sd.SDP = k.conn.admitSDP(sd.SDP)
	if err := k.conn.answer(sd); err != nil {
		log.Warn("cannot answer", "err", err)
		k.end(protocol.ReasonHangup)
	}
}

// onCandidate adds a candidate from the caller, if the echo peer may send to it; null or an empty candidate is the
// end of candidates.
func (k *call) onCandidate(raw json.RawMessage) {
	log := k.s.echo.log
	if k.conn == nil || len(raw) == 0 || string(raw) == "null" {
		return
	}
	var c webrtc.ICECandidateInit
	if err := json.Unmarshal(raw, &c); err != nil {
		log.Debug("malformed candidate", "caller", k.peer, "err", err)
		return
	}
	if c.Candidate == "" {
		return
	}
	if !k.conn.admit(c.Candidate) {
		return
	}
	if err := k.conn.pc.AddICECandidate(c); err != nil {
		log.Debug("candidate refused", "caller", k.peer, "err", err)
	}
}

// peerConn is one peer connection of a call.
type peerConn struct {
	k         *call
	pc        *webrtc.PeerConnection
	sessionID string // the SDP session of the caller's peer connection (the o= line's)

	// the call's goroutine's own
	ufrag   string              // the caller's ICE username fragment: a new one is an ICE restart
	remotes map[string]struct{} // the caller's candidates admitted in this ICE session

	mu       sync.Mutex
	answered bool              // the first answer is sent: candidates may follow it
	pending  []json.RawMessage // local candidates gathered before that
	closed   bool
	loops    sync.WaitGroup // the peer connection's own goroutines (RTP and RTCP loops)
	echoes   map[*webrtc.RTPReceiver]*echoTrack
}

// echoTrack sends one incoming track back.
type echoTrack struct {
	c      *peerConn
	sender *webrtc.RTPSender

	mu     sync.Mutex
	local  *webrtc.TrackLocalStaticRTP
	remote *webrtc.TrackRemote
	lastKF time.Time // the last keyframe request sent to the caller
}

func (k *call) newConn(sessionID string) (*peerConn, error) {
	s := k.s
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
	c := &peerConn{k: k, pc: pc, sessionID: sessionID, remotes: make(map[string]struct{}), echoes: make(map[*webrtc.RTPReceiver]*echoTrack)}
	// pion calls these on goroutines of its own: a panic in one must end this call, not the process.
	pc.OnICECandidate(func(cand *webrtc.ICECandidate) {
		defer k.contain("a local candidate")
		c.onLocalCandidate(cand)
	})
	pc.OnConnectionStateChange(func(st webrtc.PeerConnectionState) {
		defer k.contain("a connection state change")
		s.echo.log.Debug("connection state", "caller", k.peer, "state", st)
		if c.isClosed() {
			return // replaced
		}
		switch st {
		case webrtc.PeerConnectionStateConnected:
			k.connect.Stop()
		case webrtc.PeerConnectionStateFailed:
			k.end(protocol.ReasonHangup)
		}
	})
	pc.OnTrack(func(remote *webrtc.TrackRemote, receiver *webrtc.RTPReceiver) {
		defer k.contain("a new track")
		c.onTrack(remote, receiver)
	})
	pc.OnDataChannel(func(dc *webrtc.DataChannel) {
		dc.OnMessage(func(msg webrtc.DataChannelMessage) {
			defer k.contain("a data channel message")
			var err error
			if msg.IsString {
				err = dc.SendText(string(msg.Data))
			} else {
				err = dc.Send(msg.Data)
			}
			if err != nil {
				s.echo.log.Debug("data channel echo failed", "caller", k.peer, "err", err)
			}
		})
	})
	return c, nil
}

func (c *peerConn) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// close closes the peer connection and waits for its goroutines. It must not be called from one of pion's
// callbacks (GracefulClose waits for them): the call's goroutine calls it.
func (c *peerConn) close() {
	c.mu.Lock()
	c.closed = true
	c.pending = nil
	c.mu.Unlock()
	if err := c.pc.GracefulClose(); err != nil {
		c.k.s.echo.log.Debug("closing peer connection", "caller", c.k.peer, "err", err)
	}
	c.loops.Wait()
	c.k.s.echo.open.Dec()
}

// sdpSessionID returns the session id of an SDP's o= line, which stays the same for the life of the peer
// connection that made it (RFC 8866, RFC 9429).
func sdpSessionID(sdp string) string {
	for line := range strings.SplitSeq(sdp, "\n") {
		if v, ok := strings.CutPrefix(line, "o="); ok {
			if f := strings.Fields(v); len(f) > 1 {
				return f[1]
			}
			return ""
		}
	}
	return ""
}

// admitSDP returns the offer's SDP without the a=candidate lines the echo peer may not send to, and starts a new
// ICE session (whose candidates are counted afresh) when the offer restarts ICE.
func (c *peerConn) admitSDP(sdp string) string {
	var out strings.Builder
	out.Grow(len(sdp))
	ufragSeen := false
	for line := range strings.SplitAfterSeq(sdp, "\n") {
		attr := strings.TrimRight(line, "\r\n")
		if v, ok := strings.CutPrefix(attr, "a=ice-ufrag:"); ok && !ufragSeen {
			ufragSeen = true
			if v != c.ufrag {
				c.ufrag = v
				clear(c.remotes)
			}
		}
		if v, ok := strings.CutPrefix(attr, "a="); ok && strings.HasPrefix(v, "candidate:") && !c.admit(v) {
			continue
		}
		out.WriteString(line)
	}
	return out.String()
}

// admit reports whether the echo peer may send to a candidate of the caller (an a=candidate value, with or
// without "candidate:"): its address must be an IP address the policy allows (or a relay of the server's TURN
// server), and the ICE session must have room for it.
func (c *peerConn) admit(candidate string) bool {
	e := c.k.s.echo
	cand, err := ice.UnmarshalCandidate(candidate)
	if err != nil {
		e.log.Debug("malformed candidate", "caller", c.k.peer, "err", err)
		return false
	}
	ip, err := netip.ParseAddr(cand.Address())
	if err != nil || cand.Port() <= 0 || cand.Port() > 65535 {
		e.log.Debug("candidate without an IP address and port; ignored", "caller", c.k.peer, "address", cand.Address())
		return false
	}
	addr := netip.AddrPortFrom(ip.Unmap(), uint16(cand.Port()))
	if !e.allowsRemote(addr) {
		e.log.Debug("candidate in a network the echo peer may not reach; ignored", "caller", c.k.peer, "address", addr)
		return false
	}
	key := cand.NetworkType().String() + " " + addr.String()
	if _, ok := c.remotes[key]; !ok {
		if len(c.remotes) >= maxRemoteCandidates {
			e.log.Debug("too many candidates; ignored", "caller", c.k.peer, "address", addr)
			return false
		}
		c.remotes[key] = struct{}{}
	}
	return true
}

// answer applies an offer and sends the answer, first sending back a track for each one the caller sends.
func (c *peerConn) answer(offer webrtc.SessionDescription) error {
	k := c.k
	if err := c.pc.SetRemoteDescription(offer); err != nil {
		return fmt.Errorf("set offer: %w", err)
	}
	if err := c.addEchoTracks(); err != nil {
		return err
	}
	answer, err := c.pc.CreateAnswer(nil)
	if err != nil {
		return fmt.Errorf("create answer: %w", err)
	}
	if err := c.pc.SetLocalDescription(answer); err != nil {
		return fmt.Errorf("set answer: %w", err)
	}
	raw, err := json.Marshal(c.pc.LocalDescription())
	if err != nil {
		return fmt.Errorf("encode answer: %w", err)
	}
	k.s.send(func(ctx context.Context) error { return k.s.c.SendAnswer(ctx, k.peer, raw) })

	c.mu.Lock()
	c.answered = true
	pending := c.pending
	c.pending = nil
	c.mu.Unlock()
	for _, cand := range pending {
		k.s.send(func(ctx context.Context) error { return k.s.c.SendCandidate(ctx, k.peer, cand) })
	}
	return nil
}

// addEchoTracks gives each transceiver that receives media and has no sender yet a track to send it back on. The
// track takes the first codec negotiated for the transceiver; onTrack switches it if the caller sends another.
func (c *peerConn) addEchoTracks() error {
	for _, t := range c.pc.GetTransceivers() {
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
		sender, err := c.pc.AddTrack(local)
		if err != nil {
			return fmt.Errorf("add echo track: %w", err)
		}
		// AddTrack took the first free transceiver of the kind: find which, to know whose media goes back on it.
		for _, t := range c.pc.GetTransceivers() {
			if t.Sender() == sender && t.Receiver() != nil {
				et := &echoTrack{c: c, sender: sender, local: local}
				c.mu.Lock()
				c.echoes[t.Receiver()] = et
				c.mu.Unlock()
				c.goLoop(et.readRTCP)
			}
		}
	}
	return nil
}

// goLoop runs f in a goroutine that close waits for, unless the peer connection is closed.
func (c *peerConn) goLoop(f func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closed {
		c.loops.Go(func() {
			defer c.k.contain("a media loop")
			f()
		})
	}
}

// onLocalCandidate sends a local candidate to the caller, after the answer. The end of candidates is not sent: the
// tutorial's client cannot take a null candidate.
func (c *peerConn) onLocalCandidate(cand *webrtc.ICECandidate) {
	if cand == nil {
		return
	}
	raw, err := json.Marshal(cand.ToJSON())
	if err != nil {
		return
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	if !c.answered {
		c.pending = append(c.pending, raw)
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	k := c.k
	k.s.send(func(ctx context.Context) error { return k.s.c.SendCandidate(ctx, k.peer, raw) })
}

// onTrack sends an incoming track back to the caller, packet by packet.
func (c *peerConn) onTrack(remote *webrtc.TrackRemote, receiver *webrtc.RTPReceiver) {
	c.mu.Lock()
	et := c.echoes[receiver]
	c.mu.Unlock()
	log := c.k.s.echo.log.With("caller", c.k.peer, "kind", remote.Kind(), "codec", remote.Codec().MimeType)
	if et == nil {
		log.Debug("a track with no way back; dropping it")
		c.goLoop(func() { drain(remote) })
		return
	}
	et.mu.Lock()
	taken := et.remote != nil
	et.mu.Unlock()
	if taken {
		// A second stream on one transceiver (a simulcast layer): one stream goes back, the others are read and
		// dropped, as mixing them on one track would garble the picture.
		log.Debug("another stream of a track that is already echoed; dropping it", "rid", remote.RID())
		c.goLoop(func() { drain(remote) })
		return
	}
	if err := et.setRemote(remote); err != nil {
		log.Warn("cannot echo the track", "err", err)
		c.goLoop(func() { drain(remote) })
		return
	}
	log.Debug("echoing a track")
	c.goLoop(et.forward)
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
	_ = et.c.pc.WriteRTCP([]rtcp.Packet{pli})
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
