package controllers

import (
	"fmt"
	"slices"
	"strings"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
	"github.com/m2m-dev/m2m-operator/internal/credentials"
)

// RestartAction is what the manager does with one restart target.
type RestartAction string

const (
	// RestartNone: the target was already restarted for the credential the Secret carries.
	RestartNone RestartAction = ""
	// RestartNow: the target opted in and was not restarted for this credential yet.
	RestartNow RestartAction = "Restart"
	// RestartRefused: the target does not carry m2m.dev/restart-on-rotation naming the client.
	RestartRefused RestartAction = "Refused"
	// RestartMissing: the target does not exist, or is being deleted.
	RestartMissing RestartAction = "Missing"
)

// RestartWorkload is what DecideRestart needs to know of a restart target.
type RestartWorkload struct {
	// Exists is false when the API server has no such workload.
	Exists bool
	// Deleting is true once the workload has a deletion timestamp.
	Deleting bool
	// OptIn is the value of its m2m.dev/restart-on-rotation annotation.
	OptIn string
	// Record is the value of its pod template's m2m.dev/restarted-for annotation.
	Record string
}

// RestartDecision is what to do with a restart target, and why. Record is the pod template's new
// m2m.dev/restarted-for value when Action is RestartNow.
type RestartDecision struct {
	Action RestartAction
	Why    string
	Record string
}

// restartVersionLength is how much of a credential's hash names its version on a workload:
// enough to tell versions apart, and no more of the hash than that on objects that more people
// may read than the M2MClient.
const restartVersionLength = 16

// RestartVersion is the version of credential fingerprint that restart targets record, or "" for
// none.
func RestartVersion(fingerprint string) string {
	v := strings.TrimPrefix(fingerprint, credentials.HashPrefix)
	return v[:min(len(v), restartVersionLength)]
}

// DecideRestart says whether the workload w, a restart target of the client named client, is
// restarted for the credential of version (RestartVersion), and why. The record on w itself is
// what is read back: a restart is the write of the record, so it happens at most once per
// version, whatever the manager forgot when it restarted. A target that opted in but never
// recorded a version is restarted once, since its pods may hold any earlier credential.
func DecideRestart(client, version string, w RestartWorkload) RestartDecision {
	switch {
	case !w.Exists:
		return RestartDecision{Action: RestartMissing, Why: "does not exist"}
	case w.Deleting:
		return RestartDecision{Action: RestartMissing, Why: "is being deleted"}
	case !slices.Contains(optedInClients(w.OptIn), client):
		return RestartDecision{Action: RestartRefused, Why: fmt.Sprintf("does not name this client in its %s annotation", m2mv1alpha1.RestartOnRotationAnnotation)}
	case version == "":
		return RestartDecision{Action: RestartNone, Why: "the Secret carries no credential to restart for"}
	}
	records := parseRestartRecord(w.Record)
	if records[client] == version {
		return RestartDecision{Action: RestartNone, Why: "was restarted for the current credential"}
	}
	why := "was never restarted for this client"
	if records[client] != "" {
		why = "was restarted for an earlier credential"
	}
	records[client] = version
	return RestartDecision{Action: RestartNow, Why: why, Record: formatRestartRecord(records)}
}

// optedInClients are the client names an opt-in annotation value lists (m2m.dev/restart-on-rotation,
// m2m.dev/source-for), separated by commas or
// spaces.
func optedInClients(optIn string) []string {
	return strings.FieldsFunc(optIn, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' })
}

// parseRestartRecord reads "name=version" entries, separated by spaces; it skips anything else,
// which only makes the clients concerned restart once more.
func parseRestartRecord(record string) map[string]string {
	out := map[string]string{}
	for _, f := range strings.Fields(record) {
		if name, version, ok := strings.Cut(f, "="); ok && name != "" && version != "" {
			out[name] = version
		}
	}
	return out
}

// formatRestartRecord writes the entries sorted by name, so that the same versions always give
// the same value and an unchanged record never changes the pod template.
func formatRestartRecord(records map[string]string) string {
	entries := make([]string, 0, len(records))
	for name, version := range records {
		entries = append(entries, name+"="+version)
	}
	slices.Sort(entries)
	return strings.Join(entries, " ")
}
