package store

// How many operations one etcd transaction may carry. etcd refuses a transaction of more
// than its --max-txn-ops (128 by default, which an external cluster is assumed to keep);
// every etcd member hass embeds is started with embeddedMaxTxnOps, so that a decision that
// changes many records at once (a takeover restoring 50,000 VMs logs one event each; an
// evacuation; a thousand hosts' lists grouped) costs a few disk syncs, not hundreds. A
// transaction also stays well under etcd's request size limit (1.5 MiB): a thousand records
// of a few hundred bytes each.
const embeddedMaxTxnOps = 1024

// txnOps is the most operations the store puts in one transaction (guards included).
func (s *Store) txnOps() int {
	if s.bigTxns {
		return embeddedMaxTxnOps - 8
	}
	return maxTxnOps
}

// eventsPerTxn is the most events the store appends in one transaction (one more operation
// is the counter).
func (s *Store) eventsPerTxn() int {
	if s.bigTxns {
		return embeddedMaxTxnOps - 24
	}
	return maxEventsPerTxn
}
