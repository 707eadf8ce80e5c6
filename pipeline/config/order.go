package config

import (
	"fmt"

	"github.com/pipelined/pipelined/pipeline/rules"
)

// Order-on-dead values (delivery.order_on_dead).
const (
	OrderOnDeadRelease = "release"
	OrderOnDeadBlock   = "block"
)

// errOrderJetStream says why delivery.order_key is refused on JetStream.
const errOrderJetStream = "delivery.order_key is not supported with the jetstream log: its queue is a JetStream consumer shared by " +
	"every daemon of the cluster, so no one daemon knows which events of a key the others have in flight, and JetStream " +
	"cannot park a message without counting a delivery; use the badger log for this sink, or remove order_key"

// checkOrder checks and compiles delivery.order_key and
// delivery.order_on_dead of every [[sink]] into plan.OrderKeys.
func (c *Config) checkOrder(p *problems, plan *Plan) {
	for i, s := range c.Sinks {
		what := fmt.Sprintf("sink %q", s.Name)
		d := s.Delivery
		switch d.OrderOnDead {
		case "", OrderOnDeadRelease, OrderOnDeadBlock:
		default:
			p.at("sink", i, "order_on_dead", `%s: delivery.order_on_dead: %q is not "release" (the default) or "block"`, what, d.OrderOnDead)
		}
		if d.OrderKey == "" {
			if d.OrderOnDead != "" {
				p.at("sink", i, "order_on_dead", "%s: delivery.order_on_dead: set delivery.order_key too (it says what happens to a key)", what)
			}
			continue
		}
		if c.Log.Backend == "jetstream" {
			p.at("sink", i, "order_key", "%s: %s", what, errOrderJetStream)
			continue
		}
		prog, err := rules.CompileValue(d.OrderKey)
		if err != nil {
			p.add(c.exprErr("sink", i, "order_key", what+": delivery", err))
			continue
		}
		if plan.OrderKeys == nil {
			plan.OrderKeys = map[string]*rules.Program{}
		}
		plan.OrderKeys[s.Name] = prog
	}
}
