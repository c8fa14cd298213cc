package rediscluster

import (
	"encoding/binary"
	"errors"

	"tandem/internal/cluster"
)

// A pack is what an outbox publishes to a node that takes packs: every envelope it had queued for that node, in
// one Redis message, so that a message between nodes costs Redis, the client and the system calls a share of one
// PUBLISH instead of one each. Its layout: the byte packVersion (a single envelope starts with its own version,
// 1, so the two are told apart by their first byte), then each envelope, in the order it was sent, after its
// length (uvarint). A pack holds at most maxPack bytes, unless its one envelope is larger.

const (
	packVersion = 2
	// maxPack bounds a pack: far below the limits Redis puts on a subscriber's output buffer (by default 8 MB
	// for a minute, 32 MB at once) and on a message (512 MB), and large enough for hundreds of relayed offers.
	maxPack = 256 << 10
)

var errBadPack = errors.New("rediscluster: bad pack")

// isPack says whether a message on a node's channel is a pack (else it is one envelope).
func isPack(msg string) bool { return len(msg) > 0 && msg[0] == packVersion }

// startPack begins a pack in buf's storage.
func startPack(buf []byte) []byte { return append(buf[:0], packVersion) }

// packedLen is how many bytes env takes in a pack.
func packedLen(env []byte) int {
	var l [binary.MaxVarintLen64]byte
	return binary.PutUvarint(l[:], uint64(len(env))) + len(env)
}

// appendPacked adds an encoded envelope to a pack.
func appendPacked(pack, env []byte) []byte {
	pack = binary.AppendUvarint(pack, uint64(len(env)))
	return append(pack, env...)
}

// eachPacked calls f with each envelope of a pack this node built, in order (a sub-slice of pack).
func eachPacked(pack []byte, f func(env []byte)) {
	for rest := pack[1:]; len(rest) > 0; {
		l, n := binary.Uvarint(rest)
		f(rest[n : n+int(l)])
		rest = rest[n+int(l):]
	}
}

// countPacked is how many envelopes a pack this node built holds.
func countPacked(pack []byte) int {
	count := 0
	eachPacked(pack, func([]byte) { count++ })
	return count
}

// dropPacked removes the first k envelopes of a pack this node built: in place, or, with fresh, into a new
// buffer (the client may still hold pack's).
func dropPacked(pack []byte, k int, fresh bool) []byte {
	off := 1
	eachPacked(pack, func(env []byte) {
		if k > 0 {
			off += packedLen(env)
			k--
		}
	})
	if fresh {
		return append(append(make([]byte, 0, 1+len(pack)-off), packVersion), pack[off:]...)
	}
	return append(pack[:1], pack[off:]...)
}

// unpack decodes a pack's envelopes, in order, into e, calling f with each (e is valid only during the call: its
// Frame is pack's own bytes, see decodeString). It returns how many it decoded; at the first envelope that does
// not decode, or a length that runs past the pack's end, it stops with errBadPack.
func unpack(pack string, e *cluster.Envelope, f func(*cluster.Envelope)) (int, error) {
	if !isPack(pack) {
		return 0, errBadPack
	}
	n := 0
	for rest := pack[1:]; len(rest) > 0; n++ {
		l, w := uvarint(rest)
		if w <= 0 || uint64(len(rest)-w) < l {
			return n, errBadPack
		}
		if err := decodeString(rest[w:w+int(l)], e); err != nil {
			return n, errors.Join(errBadPack, err)
		}
		f(e)
		rest = rest[w+int(l):]
	}
	return n, nil
}
