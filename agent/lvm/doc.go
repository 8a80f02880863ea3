// Package lvm wraps the LVM commands the agent runs on a node: JSON reports, LV create,
// remove, extend, activation with lvmlockd lock modes, rename, pvmove and lockspace
// start/stop. Commands are argument vectors run through an executor.Executor; every VG and
// LV name is validated before use. No Kubernetes imports.
package lvm
