// Package client is the Go client of the tandem signaling protocol (docs/protocol.md): it connects to a tandem
// server over a WebSocket (ws:// or wss://), logs in, sends each message type and reads the server's messages as
// typed values. It is the one protocol client of the project: the echo peer, the load generator and the Go tests
// all use it.
//
// A Client starts no goroutine: the caller reads in its own loop, with Read (a decoded *Message) or ReadRaw (the
// frame's bytes, for callers that count every allocation), and may send from any goroutine meanwhile. An event
// loop that waits for many connections at once (the load generator's) uses SyscallConn and TryReadRaw instead.
// The WebSocket framing is the package's own (conn.go): a message that came in one frame is returned from the
// read buffer as it is, a frame is written with one system call, and on Linux a TCP connection is read and
// written with recvfrom and sendto. Errors the
// server reports are *Error values with the protocol's code, matched with errors.Is against ErrNameTaken,
// ErrNotOnline, ErrBusy and the other sentinels; a close by the server is a *CloseError (ErrReplaced when the
// name was taken over with the resume token, ErrGoingAway when the server stops).
//
// The payloads are raw JSON, passed through untouched as the server does: an offer or answer is an
// RTCSessionDescription ({"type":"offer","sdp":"..."}), a candidate an RTCIceCandidateInit. With a WebRTC library
// such as pion, encode its SessionDescription and ICECandidateInit with encoding/json.
//
// Options.Tutorial sends every message exactly as the tutorial's browser client does, so the same code can test
// tandem's compatibility or measure the tutorial's own server.
//
// A call, from the caller's side:
//
//	c, err := client.Dial(ctx, "ws://localhost:9090/", nil)
//	if err != nil { ... }
//	defer c.Close()
//	reply, err := c.Login(ctx, "alice", "")  // reply.Token resumes the name later; reply.ICEServers for WebRTC
//	if errors.Is(err, client.ErrNameTaken) { ... }
//	err = c.SendOffer(ctx, "bob", offerJSON)
//	for {
//		m, err := c.Read(ctx)
//		if err != nil { ... }              // the connection is gone (a *DecodeError excepted)
//		switch m.Type {
//		case protocol.TypeAnswer:    // m.Answer from m.Name
//		case protocol.TypeCandidate: // m.Candidate from m.Name
//		case protocol.TypeLeave:     // the call is over; m.Reason says why
//		case protocol.TypeError:     // m.Err() is an *Error: ErrBusy, ErrNotOnline...
//		}
//	}
package client
