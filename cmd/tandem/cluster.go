package main

import (
	"flag"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/rueidis"

	"tandem/internal/cluster"
	"tandem/internal/cluster/rediscluster"
	"tandem/internal/server"
)

// clusterOptions are the flags of cluster mode (docs/cluster.md): several tandem nodes sharing one Redis.
type clusterOptions struct {
	redis     string
	node      string
	prefix    string
	heartbeat time.Duration
	lease     time.Duration
	grace     time.Duration
	drain     time.Duration
	client    rueidis.Client // made by dial; shared with the access control's shared state
}

func (o *clusterOptions) register(fs *flag.FlagSet) {
	fs.StringVar(&o.redis, "redis", "", "run as one node of a cluster sharing this Redis: redis://[user:password@]host:6379/0, rediss:// (TLS) or unix:///path, or sentinels: redis://sentinel:26379/0?master_set=name (docs/cluster.md) (empty: a single node, no Redis); every node needs the same -turn-secret")
	fs.StringVar(&o.node, "node-id", "", "this node's id in the cluster, unique (empty: the host name and a random suffix, new at every start)")
	fs.StringVar(&o.prefix, "redis-prefix", rediscluster.DefaultPrefix, "prefix of tandem's keys and channels in Redis (clusters sharing one Redis need their own)")
	fs.DurationVar(&o.heartbeat, "cluster-heartbeat", rediscluster.DefaultHeartbeat, "how often a node renews its lease in Redis and looks for nodes that died")
	fs.DurationVar(&o.lease, "cluster-lease", rediscluster.DefaultLease, "how long a node counts as alive after its last heartbeat (at least two heartbeats)")
	fs.DurationVar(&o.grace, "resume-grace", cluster.DefaultResumeGrace, "how long the name and calls of a user of a node that died wait for the user to resume on another node")
	fs.DurationVar(&o.drain, "drain-window", server.DefaultDrainWindow, "on SIGTERM, how long a cluster node spreads its users' reconnects (1012, service restart) to other nodes over; their calls go on (0: all at once)")
}

// dial makes the node's Redis client, for the cluster and the login state the nodes share.
func (o *clusterOptions) dial(logger *slog.Logger) (rueidis.Client, error) {
	if o.node == "" {
		o.node = rediscluster.DefaultNodeID()
	}
	c, err := rediscluster.NewClient(rediscluster.Config{URL: o.redis, Node: o.node, Logger: logger})
	if err != nil {
		return nil, fmt.Errorf("-redis: %w", err)
	}
	return c, nil
}

// configure makes cfg a cluster node when -redis is set.
func (o *clusterOptions) configure(cfg *server.Config, logger *slog.Logger) error {
	if o.redis == "" {
		return nil
	}
	if o.grace <= 0 {
		return fmt.Errorf("-resume-grace must be positive")
	}
	if o.drain < 0 {
		return fmt.Errorf("-drain-window must not be negative")
	}
	b, err := rediscluster.New(rediscluster.Config{URL: o.redis, Node: o.node, Prefix: o.prefix,
		Heartbeat: o.heartbeat, Lease: o.lease, ResumeGrace: o.grace, Logger: logger, Client: o.client})
	if err != nil {
		return fmt.Errorf("-redis: %w", err)
	}
	cfg.Cluster, cfg.ResumeGrace, cfg.DrainWindow = b, o.grace, o.drain
	logger.Info("cluster mode", "node", b.Node(), "lease", o.lease, "resume_grace", o.grace)
	return nil
}
