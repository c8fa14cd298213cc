// Package webrtctest has WebRTC peers for tests: pion peer connections that gather candidates on 127.0.0.1 only
// (no test packet may leave loopback), and a Peer that logs in to a tandem server with the Go client and calls or
// answers like a browser running the tutorial's client: offer, answer and trickled candidates, audio and video
// tracks, a data channel.
package webrtctest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"tandem/client"
	"tandem/protocol"
)

// LoopbackOnly restricts a SettingEngine to UDP over IPv4 on 127.0.0.1, loopback candidates included and mDNS
// off, so that every ICE check and media packet stays on loopback.
func LoopbackOnly(se *webrtc.SettingEngine) {
	se.SetIncludeLoopbackCandidate(true)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetInterfaceFilter(func(name string) bool { return name == "lo" })
	se.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() })
	se.SetRemoteIPFilter(func(ip net.IP) bool { return ip.IsLoopback() })
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
}

// NewAPI returns a pion API with the default codecs and interceptors, restricted by LoopbackOnly.
func NewAPI() (*webrtc.API, error) {
	var me webrtc.MediaEngine
	if err := me.RegisterDefaultCodecs(); err != nil {
		return nil, err
	}
	var ir interceptor.Registry
	if err := webrtc.RegisterDefaultInterceptors(&me, &ir); err != nil {
		return nil, err
	}
	var se webrtc.SettingEngine
	LoopbackOnly(&se)
	return webrtc.NewAPI(webrtc.WithMediaEngine(&me), webrtc.WithInterceptorRegistry(&ir), webrtc.WithSettingEngine(se)), nil
}

// Peer is a test user with one peer connection: it sends an audio and a video track and opens a data channel
// when it calls, answers any offer, and records what it receives.
type Peer struct {
	Name  string
	C     *client.Client
	PC    *webrtc.PeerConnection
	Audio *webrtc.TrackLocalStaticRTP // sent to the other party
	Video *webrtc.TrackLocalStaticRTP

	// Packets receives every RTP packet that comes in, on any track (dropped when full).
	Packets chan *rtp.Packet
	// Chat receives the text of every data-channel message that comes in.
	Chat chan string
	// Messages receives the signaling messages the peer does not handle itself (ringing, leave, error, users).
	Messages chan *client.Message
	// Answers receives the session description of every answer applied (dropped when full).
	Answers chan webrtc.SessionDescription

	mu        sync.Mutex
	peer      string
	dc        *webrtc.DataChannel
	dcOpen    chan struct{}
	connected chan struct{}
	readErr   chan error
	refused   chan *client.Message      // an error for the offer, or a leave before the call connected
	early     []webrtc.ICECandidateInit // candidates that came before the remote description (read loop only)
	// holding is set while Call has not sent its offer yet: candidates gathered meanwhile wait in held, since
	// the server refuses a candidate for a call that does not exist yet (as a browser client holds them).
	holding bool
	held    []json.RawMessage
}

// NewPeer connects to url, logs in as name and makes the peer connection (with the ICE servers of the login
// reply). Close it with Close.
func NewPeer(ctx context.Context, api *webrtc.API, url, name string, opts *client.Options) (*Peer, error) {
	c, err := client.Dial(ctx, url, opts)
	if err != nil {
		return nil, err
	}
	reply, err := c.Login(ctx, name, "")
	if err != nil {
		c.CloseNow()
		return nil, err
	}
	var servers []webrtc.ICEServer
	for _, s := range reply.ICEServers {
		servers = append(servers, webrtc.ICEServer{URLs: s.URLs, Username: s.Username, Credential: s.Credential})
	}
	pc, err := api.NewPeerConnection(webrtc.Configuration{ICEServers: servers})
	if err != nil {
		c.CloseNow()
		return nil, fmt.Errorf("webrtctest: new peer connection: %w", err)
	}
	p := &Peer{
		Name:      name,
		C:         c,
		PC:        pc,
		Packets:   make(chan *rtp.Packet, 4096),
		Chat:      make(chan string, 64),
		Messages:  make(chan *client.Message, 64),
		Answers:   make(chan webrtc.SessionDescription, 8),
		dcOpen:    make(chan struct{}),
		connected: make(chan struct{}),
		readErr:   make(chan error, 1),
		refused:   make(chan *client.Message, 1),
	}
	var once sync.Once
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		if s == webrtc.PeerConnectionStateConnected {
			once.Do(func() { close(p.connected) })
		}
	})
	p.Audio, _ = webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, "audio", name)
	p.Video, _ = webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, "video", name)
	for _, t := range []*webrtc.TrackLocalStaticRTP{p.Audio, p.Video} {
		sender, err := pc.AddTrack(t)
		if err != nil {
			p.Close()
			return nil, fmt.Errorf("webrtctest: add track: %w", err)
		}
		go func() { // read RTCP so that the interceptors run; ends when the peer connection closes
			for {
				if _, _, err := sender.ReadRTCP(); err != nil {
					return
				}
			}
		}()
	}
	pc.OnICECandidate(func(cand *webrtc.ICECandidate) {
		if cand == nil {
			return
		}
		raw, _ := json.Marshal(cand.ToJSON())
		p.mu.Lock()
		to := p.peer
		if p.holding {
			p.held = append(p.held, raw)
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		p.C.SendCandidate(ctx, to, raw)
	})
	pc.OnTrack(func(remote *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		for {
			pkt, _, err := remote.ReadRTP()
			if err != nil {
				return
			}
			select {
			case p.Packets <- pkt:
			default:
			}
		}
	})
	pc.OnDataChannel(p.setDataChannel)
	go p.readLoop()
	return p, nil
}

func (p *Peer) setDataChannel(dc *webrtc.DataChannel) {
	p.mu.Lock()
	p.dc = dc
	p.mu.Unlock()
	dc.OnOpen(func() { close(p.dcOpen) })
	dc.OnMessage(func(m webrtc.DataChannelMessage) {
		select {
		case p.Chat <- string(m.Data):
		default:
		}
	})
}

// Call opens a data channel and sends an offer to name.
func (p *Peer) Call(ctx context.Context, name string) error {
	p.mu.Lock()
	p.peer, p.holding = name, true
	p.mu.Unlock()
	defer func() { // sends the candidates gathered before the offer was, after it
		p.mu.Lock()
		held := p.held
		p.holding, p.held = false, nil
		p.mu.Unlock()
		for _, raw := range held {
			if err := p.C.SendCandidate(ctx, name, raw); err != nil {
				return
			}
		}
	}()
	dc, err := p.PC.CreateDataChannel("chat", nil)
	if err != nil {
		return err
	}
	p.setDataChannel(dc)
	offer, err := p.PC.CreateOffer(nil)
	if err != nil {
		return err
	}
	if err := p.PC.SetLocalDescription(offer); err != nil {
		return err
	}
	raw, _ := json.Marshal(p.PC.LocalDescription())
	return p.C.SendOffer(ctx, name, raw)
}

// Renegotiate sends a new offer for the call in progress, restarting ICE if iceRestart is set, as a browser does
// when its network changes.
func (p *Peer) Renegotiate(ctx context.Context, iceRestart bool) error {
	p.mu.Lock()
	to := p.peer
	p.mu.Unlock()
	offer, err := p.PC.CreateOffer(&webrtc.OfferOptions{ICERestart: iceRestart})
	if err != nil {
		return err
	}
	if err := p.PC.SetLocalDescription(offer); err != nil {
		return err
	}
	raw, _ := json.Marshal(p.PC.LocalDescription())
	return p.C.SendOffer(ctx, to, raw)
}

// readLoop handles the signaling messages of the call; the rest go to Messages.
func (p *Peer) readLoop() {
	defer close(p.Messages)
	for {
		m, err := p.C.Read(context.Background())
		var de *client.DecodeError
		if errors.As(err, &de) {
			continue
		}
		if err != nil {
			p.readErr <- err
			return
		}
		if err := p.handle(m); err != nil {
			p.readErr <- err
			return
		}
	}
}

func (p *Peer) handle(m *client.Message) error {
	switch m.Type {
	case protocol.TypeOffer:
		p.mu.Lock()
		p.peer = m.Name
		p.mu.Unlock()
		var sd webrtc.SessionDescription
		if err := json.Unmarshal(m.Offer, &sd); err != nil {
			return err
		}
		if err := p.setRemote(sd); err != nil {
			return err
		}
		answer, err := p.PC.CreateAnswer(nil)
		if err != nil {
			return err
		}
		if err := p.PC.SetLocalDescription(answer); err != nil {
			return err
		}
		raw, _ := json.Marshal(p.PC.LocalDescription())
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return p.C.SendAnswer(ctx, m.Name, raw)
	case protocol.TypeAnswer:
		var sd webrtc.SessionDescription
		if err := json.Unmarshal(m.Answer, &sd); err != nil {
			return err
		}
		if err := p.setRemote(sd); err != nil {
			return err
		}
		select {
		case p.Answers <- sd:
		default:
		}
		return nil
	case protocol.TypeCandidate:
		var c webrtc.ICECandidateInit
		if string(m.Candidate) == "null" {
			return nil
		}
		if err := json.Unmarshal(m.Candidate, &c); err != nil {
			return err
		}
		if p.PC.RemoteDescription() == nil {
			// The other side's candidates may overtake its answer: it gathers as soon as it has set it.
			p.early = append(p.early, c)
			return nil
		}
		return p.PC.AddICECandidate(c)
	}
	if (m.Type == protocol.TypeError && m.Request == protocol.TypeOffer) || m.Type == protocol.TypeLeave {
		select {
		case p.refused <- m:
		default:
		}
	}
	select {
	case p.Messages <- m:
	default:
	}
	return nil
}

// setRemote sets the remote description, then adds the candidates that came before it.
func (p *Peer) setRemote(sd webrtc.SessionDescription) error {
	if err := p.PC.SetRemoteDescription(sd); err != nil {
		return err
	}
	for _, c := range p.early {
		if err := p.PC.AddICECandidate(c); err != nil {
			return err
		}
	}
	p.early = nil
	return nil
}

// WaitConnected waits until the peer connection is connected.
func (p *Peer) WaitConnected(ctx context.Context) error {
	select {
	case <-p.connected:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("webrtctest: %s not connected (%v): %w", p.Name, p.PC.ConnectionState(), ctx.Err())
	case err := <-p.readErr:
		return fmt.Errorf("webrtctest: %s: %w", p.Name, err)
	case m := <-p.refused:
		if err := m.Err(); err != nil {
			return fmt.Errorf("webrtctest: %s: call refused: %w", p.Name, err)
		}
		return fmt.Errorf("webrtctest: %s: %s left (%s) before the call connected", p.Name, m.Name, m.Reason)
	}
}

// SendChat sends text on the data channel, once it is open.
func (p *Peer) SendChat(ctx context.Context, text string) error {
	select {
	case <-p.dcOpen:
	case <-ctx.Done():
		return fmt.Errorf("webrtctest: %s: data channel not open: %w", p.Name, ctx.Err())
	}
	p.mu.Lock()
	dc := p.dc
	p.mu.Unlock()
	return dc.SendText(text)
}

// Hangup sends a leave to the other party, then closes like Close.
func (p *Peer) Hangup(ctx context.Context) error {
	p.mu.Lock()
	to := p.peer
	p.mu.Unlock()
	err := p.C.SendLeave(ctx, to, protocol.ReasonHangup)
	p.Close()
	return err
}

// Close closes the peer connection and the connection to the server, and waits for the peer's goroutines.
func (p *Peer) Close() {
	p.PC.GracefulClose()
	p.C.Close()
	for range p.Messages { // until readLoop ends
	}
}

// SendNumbered sends numbered audio and video packets on p's tracks, one of each every 5 ms, until ctx ends. Each
// payload is NumberedPayload(tag, kind, sequence number), so that a receiver can tell what arrived, and from whom.
func (p *Peer) SendNumbered(ctx context.Context, tag string) {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for seq := uint16(1); ; seq++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for _, tr := range []*webrtc.TrackLocalStaticRTP{p.Audio, p.Video} {
			_ = tr.WriteRTP(&rtp.Packet{
				Header:  rtp.Header{Version: 2, SequenceNumber: seq, Timestamp: uint32(seq) * 960, SSRC: 1, Marker: true},
				Payload: []byte(NumberedPayload(tag, tr.Kind().String(), seq)),
			})
		}
	}
}

// NumberedPayload is the payload SendNumbered gives packet seq of kind ("audio" or "video").
func NumberedPayload(tag, kind string, seq uint16) string {
	return fmt.Sprintf("%s-%s-%d", tag, kind, seq)
}
