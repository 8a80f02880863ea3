// Package agent is the per-node agent (a DaemonSet pod, NODE_NAME from the downward API).
// It is the only component that runs LVM or sanlock commands: it starts lockspaces,
// executes the LVM work the operator assigns to its node, applies the lock desired for its
// node's attachments and reports what it reads back from LVM and sanlock. The command
// wrappers live in agent/lvm and agent/sanlock and have no Kubernetes imports; this package
// joins them to the API.
package agent
