// Command drainpeer loads and drains the work queues that memq-rs's drain benchmark
// (`cargo xtask bench drain`) runs beside it: beanstalkd, NATS JetStream and a Redis list, each
// driven the way its users drive it for at-least-once work (an item is acked, or deleted, only
// after it was taken). Test infrastructure of memq-rs only: scripts/bench.sh builds it into
// ~/.cache/memq-rs.
//
//	drainpeer fill PEER ADDR COUNT    load COUNT items of 16 bytes ("item-00000000042")
//	drainpeer drain PEER ADDR BATCH   take and ack items until none is left; prints "acked N"
//	drainpeer left PEER ADDR          prints how many items the peer still holds
//
// PEER is one of:
//   - beanstalkd: reserve + delete. BATCH > 1 pipelines BATCH reserves on the connection, then
//     the BATCH deletes (beanstalkd has no batch commands; pipelining is its batched way).
//   - nats: a JetStream stream "work" with WorkQueue retention in memory, a durable pull
//     consumer "workers" shared by every drainer, Fetch of up to BATCH messages, an explicit
//     ack each (sent without waiting, flushed before the drainer reports).
//   - redis: the work queue of the Kubernetes docs: LMOVE from "work" to "processing", then
//     LREM from "processing" once done. BATCH > 1 pipelines BATCH moves, then BATCH removes.
package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
)

const usage = `usage: drainpeer fill PEER ADDR COUNT | drain PEER ADDR BATCH | left PEER ADDR
PEER: beanstalkd, nats, redis`

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "drainpeer: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) < 3 {
		return fmt.Errorf("%s", usage)
	}
	verb, peer, addr := args[0], args[1], args[2]
	number := func() (int, error) {
		if len(args) != 4 {
			return 0, fmt.Errorf("%s", usage)
		}
		n, err := strconv.Atoi(args[3])
		if err != nil || n < 1 {
			return 0, fmt.Errorf("%q is not a whole number from 1", args[3])
		}
		return n, nil
	}
	var q queue
	switch peer {
	case "beanstalkd":
		q = &beanstalk{addr: addr}
	case "nats":
		q = &jetStream{addr: addr}
	case "redis":
		q = &redisList{addr: addr}
	default:
		return fmt.Errorf("unknown peer %q\n%s", peer, usage)
	}
	switch verb {
	case "fill":
		n, err := number()
		if err != nil {
			return err
		}
		return q.fill(n)
	case "drain":
		batch, err := number()
		if err != nil {
			return err
		}
		acked, err := q.drain(batch)
		if err != nil {
			return err
		}
		fmt.Printf("acked %d\n", acked)
		return nil
	case "left":
		n, err := q.left()
		if err != nil {
			return err
		}
		fmt.Printf("left %d\n", n)
		return nil
	}
	return fmt.Errorf("unknown command %q\n%s", verb, usage)
}

// queue is one peer's client.
type queue interface {
	fill(n int) error
	// drain takes and acks items until none is left; how many it acked.
	drain(batch int) (int, error)
	left() (int, error)
}

func body(i int) string { return fmt.Sprintf("item-%011d", i) }

// ---- beanstalkd: its text protocol, pipelined ----

type beanstalk struct {
	addr string
	conn net.Conn
	r    *bufio.Reader
	w    *bufio.Writer
}

func (b *beanstalk) dial() error {
	conn, err := net.Dial("tcp", b.addr)
	if err != nil {
		return err
	}
	b.conn, b.r, b.w = conn, bufio.NewReaderSize(conn, 1<<16), bufio.NewWriterSize(conn, 1<<16)
	return nil
}

func (b *beanstalk) line() (string, error) {
	l, err := b.r.ReadString('\n')
	return strings.TrimRight(l, "\r\n"), err
}

func (b *beanstalk) fill(n int) error {
	if err := b.dial(); err != nil {
		return err
	}
	defer b.conn.Close()
	for start := 0; start < n; start += 1000 {
		end := min(start+1000, n)
		for i := start; i < end; i++ {
			item := body(i)
			// Priority 0, no delay, 60 s to run before a reserved job goes back.
			fmt.Fprintf(b.w, "put 0 0 60 %d\r\n%s\r\n", len(item), item)
		}
		if err := b.w.Flush(); err != nil {
			return err
		}
		for i := start; i < end; i++ {
			l, err := b.line()
			if err != nil {
				return err
			}
			if !strings.HasPrefix(l, "INSERTED ") {
				return fmt.Errorf("put: %s", l)
			}
		}
	}
	return nil
}

func (b *beanstalk) drain(batch int) (int, error) {
	if err := b.dial(); err != nil {
		return 0, err
	}
	defer b.conn.Close()
	acked := 0
	ids := make([]string, 0, batch)
	for {
		for i := 0; i < batch; i++ {
			b.w.WriteString("reserve-with-timeout 0\r\n")
		}
		if err := b.w.Flush(); err != nil {
			return acked, err
		}
		ids = ids[:0]
		for i := 0; i < batch; i++ {
			l, err := b.line()
			if err != nil {
				return acked, err
			}
			if l == "TIMED_OUT" {
				continue
			}
			var id string
			var size int
			if _, err := fmt.Sscanf(l, "RESERVED %s %d", &id, &size); err != nil {
				return acked, fmt.Errorf("reserve: %s", l)
			}
			if _, err := io.CopyN(io.Discard, b.r, int64(size)+2); err != nil {
				return acked, err
			}
			ids = append(ids, id)
		}
		if len(ids) == 0 {
			return acked, nil
		}
		for _, id := range ids {
			fmt.Fprintf(b.w, "delete %s\r\n", id)
		}
		if err := b.w.Flush(); err != nil {
			return acked, err
		}
		for range ids {
			l, err := b.line()
			if err != nil {
				return acked, err
			}
			if l != "DELETED" {
				return acked, fmt.Errorf("delete: %s", l)
			}
			acked++
		}
	}
}

func (b *beanstalk) left() (int, error) {
	if err := b.dial(); err != nil {
		return 0, err
	}
	defer b.conn.Close()
	b.w.WriteString("stats-tube default\r\n")
	if err := b.w.Flush(); err != nil {
		return 0, err
	}
	l, err := b.line()
	if err != nil {
		return 0, err
	}
	var size int
	if _, err := fmt.Sscanf(l, "OK %d", &size); err != nil {
		return 0, fmt.Errorf("stats-tube: %s", l)
	}
	data := make([]byte, size+2)
	if _, err := io.ReadFull(b.r, data); err != nil {
		return 0, err
	}
	held := 0
	for _, l := range strings.Split(string(data), "\n") {
		for _, field := range []string{"current-jobs-ready: ", "current-jobs-reserved: ", "current-jobs-delayed: "} {
			if v, ok := strings.CutPrefix(l, field); ok {
				n, err := strconv.Atoi(strings.TrimSpace(v))
				if err != nil {
					return 0, fmt.Errorf("stats-tube: %s", l)
				}
				held += n
			}
		}
	}
	return held, nil
}

// ---- NATS JetStream: a WorkQueue stream and a shared pull consumer ----

const stream, subject, durable = "WORK", "work", "workers"

type jetStream struct{ addr string }

func (j *jetStream) connect() (*nats.Conn, jetstream.JetStream, error) {
	nc, err := nats.Connect("nats://" + j.addr)
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}

func (j *jetStream) fill(n int) error {
	nc, js, err := j.connect()
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name:      stream,
		Subjects:  []string{subject},
		Retention: jetstream.WorkQueuePolicy,
		Storage:   jetstream.MemoryStorage,
	}); err != nil {
		return err
	}
	if _, err := js.CreateOrUpdateConsumer(ctx, stream, jetstream.ConsumerConfig{
		Durable:       durable,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       60 * time.Second,
		MaxAckPending: -1,
	}); err != nil {
		return err
	}
	for start := 0; start < n; start += 1000 {
		end := min(start+1000, n)
		for i := start; i < end; i++ {
			if _, err := js.PublishAsync(subject, []byte(body(i))); err != nil {
				return err
			}
		}
		select {
		case <-js.PublishAsyncComplete():
		case <-time.After(30 * time.Second):
			return fmt.Errorf("publish: no acks within 30 s")
		}
	}
	return nil
}

func (j *jetStream) drain(batch int) (int, error) {
	nc, js, err := j.connect()
	if err != nil {
		return 0, err
	}
	defer nc.Close()
	ctx := context.Background()
	cons, err := js.Consumer(ctx, stream, durable)
	if err != nil {
		return 0, err
	}
	acked := 0
	for {
		msgs, err := cons.FetchNoWait(batch)
		if err != nil {
			return acked, err
		}
		got := 0
		for msg := range msgs.Messages() {
			if err := msg.Ack(); err != nil {
				return acked, err
			}
			got++
		}
		if err := msgs.Error(); err != nil {
			return acked, err
		}
		acked += got
		if got == 0 {
			// The acks went without waiting: make sure the server has them all.
			return acked, nc.Flush()
		}
	}
}

func (j *jetStream) left() (int, error) {
	nc, js, err := j.connect()
	if err != nil {
		return 0, err
	}
	defer nc.Close()
	s, err := js.Stream(context.Background(), stream)
	if err != nil {
		return 0, err
	}
	info, err := s.Info(context.Background())
	if err != nil {
		return 0, err
	}
	return int(info.State.Msgs), nil
}

// ---- Redis: LMOVE to a processing list, LREM when done ----

type redisList struct{ addr string }

func (r *redisList) client() *redis.Client {
	return redis.NewClient(&redis.Options{Addr: r.addr, PoolSize: 1})
}

func (r *redisList) fill(n int) error {
	c := r.client()
	defer c.Close()
	ctx := context.Background()
	for start := 0; start < n; start += 1000 {
		end := min(start+1000, n)
		items := make([]any, 0, end-start)
		for i := start; i < end; i++ {
			items = append(items, body(i))
		}
		if err := c.RPush(ctx, "work", items...).Err(); err != nil {
			return err
		}
	}
	return nil
}

func (r *redisList) drain(batch int) (int, error) {
	c := r.client()
	defer c.Close()
	ctx := context.Background()
	acked := 0
	for {
		pipe := c.Pipeline()
		moves := make([]*redis.StringCmd, batch)
		for i := range moves {
			moves[i] = pipe.LMove(ctx, "work", "processing", "LEFT", "LEFT")
		}
		pipe.Exec(ctx) // an empty list answers nil to LMOVE: read per command below
		taken := make([]string, 0, batch)
		for _, m := range moves {
			item, err := m.Result()
			if err == redis.Nil {
				continue
			}
			if err != nil {
				return acked, err
			}
			taken = append(taken, item)
		}
		if len(taken) == 0 {
			return acked, nil
		}
		pipe = c.Pipeline()
		removes := make([]*redis.IntCmd, len(taken))
		for i, item := range taken {
			removes[i] = pipe.LRem(ctx, "processing", 1, item)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return acked, err
		}
		for _, rm := range removes {
			if rm.Val() != 1 {
				return acked, fmt.Errorf("LREM removed %d", rm.Val())
			}
			acked++
		}
	}
}

func (r *redisList) left() (int, error) {
	c := r.client()
	defer c.Close()
	ctx := context.Background()
	work, err := c.LLen(ctx, "work").Result()
	if err != nil {
		return 0, err
	}
	processing, err := c.LLen(ctx, "processing").Result()
	return int(work + processing), err
}
