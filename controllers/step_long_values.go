package controllers

import (
	"context"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	m2mv1alpha1 "github.com/m2m-dev/m2m-operator/api/v1alpha1"
)

// ignoredAnnotations is what an AnnotationTooLong event last announced about a client: the
// annotations ignored then, for the client of that UID.
type ignoredAnnotations struct {
	uid   types.UID
	names []string
}

// boundValues keeps values acted on once per value within MaxTriggerLength in status
// (dropLongRecords), and announces an annotation whose value the manager ignores for its length
// (IgnoredAnnotations) once, when it starts to be ignored: without a word, a kubectl annotate
// with such a value would seem to be lost. The announcements are remembered in memory only, so
// a restarted manager announces each once more.
func (c *clientReconcile) boundValues(_ context.Context) (stepResult, error) {
	obj := c.obj
	dropLongRecords(&obj.Status)
	key := client.ObjectKeyFromObject(obj)
	names := IgnoredAnnotations(obj)
	if len(names) == 0 {
		c.r.ignored.Delete(key)
		return proceed, nil
	}
	var before []string
	if v, ok := c.r.ignored.Load(key); ok && v.(ignoredAnnotations).uid == obj.UID {
		before = v.(ignoredAnnotations).names
	}
	var whys []string
	for _, name := range names {
		if !slices.Contains(before, name) {
			_, why := annotationValue(obj, name)
			whys = append(whys, why)
		}
	}
	c.r.ignored.Store(key, ignoredAnnotations{uid: obj.UID, names: names})
	if len(whys) > 0 {
		c.r.Recorder.Eventf(obj, nil, corev1.EventTypeWarning, m2mv1alpha1.EventAnnotationTooLong, "Rotate", "%s", strings.Join(whys, "; "))
	}
	return proceed, nil
}
