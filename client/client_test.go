package client

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// scripted starts a WebSocket server on 127.0.0.1 that runs script on each connection. These tests check the
// client's own framing and reading; the tests against the real tandem server are in the server's packages and in
// calltest.
func scripted(t *testing.T, script func(ctx context.Context, ws *websocket.Conn)) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			t.Errorf("accept: %v", err)
			return
		}
		defer ws.CloseNow()
		script(r.Context(), ws)
	}))
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http")
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestSendFrames(t *testing.T) {
	t.Parallel()
	offer := json.RawMessage(`{"type":"offer","sdp":"v=0\r\n"}`)
	answer := json.RawMessage(`{"type":"answer","sdp":"v=0\r\n"}`)
	cand := json.RawMessage(`{"candidate":"candidate:1 1 udp 1 127.0.0.1 9 typ host","sdpMid":"0","sdpMLineIndex":0}`)
	send := func(ctx context.Context, c *Client) error {
		return errors.Join(
			c.SendLogin(ctx, "al\"ice", "tok"),
			c.SendOffer(ctx, "bob", offer),
			c.SendAnswer(ctx, "bob", answer),
			c.SendCandidate(ctx, "bob", cand),
			c.SendCandidate(ctx, "bob", nil),
			c.SendLeave(ctx, "bob", "declined"),
			c.SendLeave(ctx, "", ""),
			c.SendUsers(ctx, "al", 20),
			c.SendUsers(ctx, "", 0),
			c.Send(ctx, map[string]string{"type": "x"}),
			c.Send(ctx, []byte(`{"type":"raw"}`)),
		)
	}
	tandem := []string{
		`{"type":"login","name":"al\"ice","token":"tok"}`,
		`{"type":"offer","name":"bob","offer":` + string(offer) + `}`,
		`{"type":"answer","name":"bob","answer":` + string(answer) + `}`,
		`{"type":"candidate","name":"bob","candidate":` + string(cand) + `}`,
		`{"type":"candidate","name":"bob","candidate":null}`,
		`{"type":"leave","name":"bob","reason":"declined"}`,
		`{"type":"leave"}`,
		`{"type":"users","query":"al","limit":20}`,
		`{"type":"users"}`,
		`{"type":"x"}`,
		`{"type":"raw"}`,
	}
	// The tutorial client's send() adds name after the payload, and knows nothing of tokens and reasons.
	tutorial := []string{
		`{"type":"login","name":"al\"ice"}`,
		`{"type":"offer","offer":` + string(offer) + `,"name":"bob"}`,
		`{"type":"answer","answer":` + string(answer) + `,"name":"bob"}`,
		`{"type":"candidate","candidate":` + string(cand) + `,"name":"bob"}`,
		`{"type":"candidate","candidate":null,"name":"bob"}`,
		`{"type":"leave","name":"bob"}`,
		`{"type":"leave"}`,
		`{"type":"users","query":"al","limit":20}`,
		`{"type":"users"}`,
		`{"type":"x"}`,
		`{"type":"raw"}`,
	}
	for _, tc := range []struct {
		name     string
		tutorial bool
		want     []string
	}{{"tandem", false, tandem}, {"tutorial", true, tutorial}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := make(chan string, len(tc.want))
			url := scripted(t, func(ctx context.Context, ws *websocket.Conn) {
				for range tc.want {
					typ, b, err := ws.Read(ctx)
					if err != nil || typ != websocket.MessageText {
						t.Errorf("server read: %v %v", typ, err)
						return
					}
					got <- string(b)
				}
				ws.Close(websocket.StatusNormalClosure, "")
			})
			ctx := testContext(t)
			c, err := Dial(ctx, url, &Options{Tutorial: tc.tutorial})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := send(ctx, c); err != nil {
				t.Fatal(err)
			}
			for i, want := range tc.want {
				if g := <-got; g != want {
					t.Errorf("frame %d:\n got %s\nwant %s", i, g, want)
				}
				var v map[string]any
				if err := json.Unmarshal([]byte(want), &v); err != nil {
					t.Errorf("frame %d is not JSON: %v", i, err)
				}
			}
		})
	}
}

func TestLogin(t *testing.T) {
	t.Parallel()
	url := scripted(t, func(ctx context.Context, ws *websocket.Conn) {
		for {
			_, b, err := ws.Read(ctx)
			if err != nil {
				return
			}
			var m map[string]string
			json.Unmarshal(b, &m)
			switch m["name"] {
			case "taken":
				ws.Write(ctx, websocket.MessageText, []byte(`{"type":"login","success":false,"code":"name_taken","message":"the name taken is taken"}`))
			case "busy":
				// Other messages may come before the reply: a relayed offer, and a frame that is not JSON.
				ws.Write(ctx, websocket.MessageText, []byte(`Hello world`))
				ws.Write(ctx, websocket.MessageText, []byte(`{"type":"offer","offer":{"type":"offer","sdp":"x"},"name":"carol"}`))
				ws.Write(ctx, websocket.MessageBinary, []byte(`{"type":"binary"}`))
				ws.Write(ctx, websocket.MessageText, []byte(`{"type":"login","success":true,"name":"busy","token":"t"}`))
				ws.Write(ctx, websocket.MessageText, []byte(`{"type":"leave","name":"carol"}`))
			}
		}
	})
	ctx := testContext(t)
	c, err := Dial(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	reply, err := c.Login(ctx, "taken", "")
	if !errors.Is(err, ErrNameTaken) || reply == nil || reply.Success {
		t.Fatalf("Login(taken) = %+v, %v; want ErrNameTaken", reply, err)
	}
	reply, err = c.Login(ctx, "busy", "")
	if err != nil || reply.Token != "t" || reply.Name != "busy" {
		t.Fatalf("Login(busy) = %+v, %v", reply, err)
	}
	m, err := c.Read(ctx)
	if err != nil || m.Type != "offer" || m.Name != "carol" || string(m.Offer) != `{"type":"offer","sdp":"x"}` {
		t.Fatalf("first Read after Login = %+v, %v; want the queued offer", m, err)
	}
	m, err = c.Read(ctx)
	if err != nil || m.Type != "leave" || m.Name != "carol" {
		t.Fatalf("second Read = %+v, %v; want leave", m, err)
	}
}

func TestReadErrors(t *testing.T) {
	t.Parallel()
	url := scripted(t, func(ctx context.Context, ws *websocket.Conn) {
		ws.Write(ctx, websocket.MessageText, []byte(`Hello world`))
		ws.Write(ctx, websocket.MessageText, []byte(`{"type":"ringing","name":"bob"}`))
		ws.Close(4000, "replaced")
	})
	ctx := testContext(t)
	c, err := Dial(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.Read(ctx)
	var de *DecodeError
	if !errors.As(err, &de) || string(de.Data) != "Hello world" {
		t.Fatalf("Read = %v, want a DecodeError", err)
	}
	if m, err := c.Read(ctx); err != nil || m.Type != "ringing" {
		t.Fatalf("Read after a DecodeError = %+v, %v", m, err)
	}
	_, err = c.Read(ctx)
	var ce *CloseError
	if !errors.Is(err, ErrReplaced) || !errors.As(err, &ce) || ce.Reason != "replaced" {
		t.Fatalf("Read = %v, want ErrReplaced", err)
	}
	c.Close()
	if _, err := c.Read(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("Read after Close = %v", err)
	}
	if err := c.SendLeave(ctx, "", ""); !errors.Is(err, ErrClosed) {
		t.Fatalf("send after Close = %v", err)
	}
}

func TestCloseWhileReading(t *testing.T) {
	t.Parallel()
	url := scripted(t, func(ctx context.Context, ws *websocket.Conn) {
		ws.Read(ctx) // until the client closes
	})
	ctx := testContext(t)
	c, err := Dial(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := c.Read(ctx)
		done <- err
	}()
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Fatalf("Read during Close = %v, want ErrClosed", err)
	}
}

func TestDialError(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	if _, err := Dial(testContext(t), "ws"+strings.TrimPrefix(srv.URL, "http"), nil); err == nil {
		t.Fatal("Dial to a server that does not upgrade succeeded")
	}
}
