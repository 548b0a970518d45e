// chartcheck: decodes rendered Kubernetes manifests (the output of `helm
// template`) strictly into the Kubernetes API's own Go types, and checks what
// an API server would refuse but a decoder cannot see (names, labels,
// selectors that miss their own pods, mounts of volumes that do not exist).
//
//	chartcheck [FILE...]     (standard input when no file is given)
//
// Every document is decoded by apimachinery's strict serializer: a field the
// type does not have, a value of the wrong type, a duplicate key or a kind
// outside the scheme below is an error.  On success it prints the decoded
// objects, re-encoded from the typed values, as one JSON array on stdout (the
// tests run their policy checks on that); on failure one line per problem on
// stderr and exit status 1.
//
// The scheme holds only the groups the chart uses, so a kind spelled wrong,
// or a resource of another group, is refused rather than passed unchecked.
// Test tool only: never part of the product.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metavalidation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	kyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

func newScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, networkingv1.AddToScheme,
		policyv1.AddToScheme, autoscalingv2.AddToScheme,
	} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return s
}

// documents splits a multi-document YAML stream, dropping the empty ones
// (helm prints a document for a template that rendered nothing).
func documents(r io.Reader) ([][]byte, error) {
	reader := kyaml.NewYAMLReader(bufio.NewReader(r))
	var out [][]byte
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		j, err := yaml.YAMLToJSON(doc)
		if err != nil {
			return nil, err
		}
		if t := bytes.TrimSpace(j); len(t) == 0 || string(t) == "null" {
			continue
		}
		out = append(out, doc)
	}
}

// where names a document in messages: its kind and name when they parse.
func where(doc []byte, index int) string {
	var m struct {
		Kind     string `json:"kind"`
		Metadata struct {
			Name string `json:"name"`
		} `json:"metadata"`
	}
	if yaml.Unmarshal(doc, &m) == nil && m.Kind != "" {
		return fmt.Sprintf("%s/%s", m.Kind, m.Metadata.Name)
	}
	return fmt.Sprintf("document %d", index+1)
}

func main() {
	var inputs []io.Reader
	if len(os.Args) > 1 {
		for _, path := range os.Args[1:] {
			f, err := os.Open(path)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(2)
			}
			defer f.Close()
			inputs = append(inputs, f)
		}
	} else {
		inputs = append(inputs, os.Stdin)
	}

	scheme := newScheme()
	decoder := kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, scheme, scheme,
		kjson.SerializerOptions{Yaml: true, Strict: true})
	var problems []string
	objects := []runtime.Object{}
	index := 0
	for _, in := range inputs {
		docs, err := documents(in)
		if err != nil {
			fmt.Fprintln(os.Stderr, "not a YAML stream:", err)
			os.Exit(1)
		}
		for _, doc := range docs {
			name := where(doc, index)
			index++
			// A strict decoding error still returns the object; it is a problem all the same.
			obj, _, err := decoder.Decode(doc, nil, nil)
			if err != nil {
				problems = append(problems, fmt.Sprintf("%s: %v", name, err))
				continue
			}
			for _, e := range validate(obj) {
				problems = append(problems, fmt.Sprintf("%s: %s", name, e))
			}
			objects = append(objects, obj)
		}
	}
	if len(problems) > 0 {
		for _, p := range problems {
			fmt.Fprintln(os.Stderr, p)
		}
		os.Exit(1)
	}
	out, err := json.Marshal(objects)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Stdout.Write(append(out, '\n'))
}

// validate: what the API server checks and a typed decode does not.
func validate(obj runtime.Object) []string {
	var errs field.ErrorList
	meta := field.NewPath("metadata")
	checkMeta := func(m metav1.ObjectMeta, nameCheck func(string) []string) {
		for _, msg := range nameCheck(m.Name) {
			errs = append(errs, field.Invalid(meta.Child("name"), m.Name, msg))
		}
		errs = append(errs, metavalidation.ValidateLabels(m.Labels, meta.Child("labels"))...)
		for k := range m.Annotations {
			for _, msg := range validation.IsQualifiedName(strings.ToLower(k)) {
				errs = append(errs, field.Invalid(meta.Child("annotations"), k, msg))
			}
		}
	}
	spec := field.NewPath("spec")
	switch o := obj.(type) {
	case *appsv1.Deployment:
		checkMeta(o.ObjectMeta, validation.IsDNS1123Subdomain)
		errs = append(errs, workload(o.Spec.Selector, o.Spec.Template, spec)...)
		if o.Spec.Strategy.Type == appsv1.RollingUpdateDeploymentStrategyType && o.Spec.Strategy.RollingUpdate != nil {
			ru := o.Spec.Strategy.RollingUpdate
			if isZero(ru.MaxSurge) && isZero(ru.MaxUnavailable) {
				errs = append(errs, field.Invalid(spec.Child("strategy", "rollingUpdate"), "0/0",
					"maxSurge and maxUnavailable may not both be 0"))
			}
		}
		if o.Spec.Strategy.Type == appsv1.RecreateDeploymentStrategyType && o.Spec.Strategy.RollingUpdate != nil {
			errs = append(errs, field.Forbidden(spec.Child("strategy", "rollingUpdate"), "not with type Recreate"))
		}
	case *appsv1.StatefulSet:
		// A StatefulSet's name goes into its pods' host names: a DNS label.
		checkMeta(o.ObjectMeta, validation.IsDNS1123Label)
		errs = append(errs, workload(o.Spec.Selector, o.Spec.Template, spec)...)
		if o.Spec.ServiceName == "" {
			errs = append(errs, field.Required(spec.Child("serviceName"), "the headless Service that names the pods"))
		}
	case *corev1.Service:
		checkMeta(o.ObjectMeta, validation.IsDNS1035Label)
		seen := map[string]bool{}
		for i, p := range o.Spec.Ports {
			path := spec.Child("ports").Index(i)
			if len(o.Spec.Ports) > 1 && p.Name == "" {
				errs = append(errs, field.Required(path.Child("name"), "every port of a multi-port Service is named"))
			}
			if seen[p.Name] {
				errs = append(errs, field.Duplicate(path.Child("name"), p.Name))
			}
			seen[p.Name] = true
			if p.TargetPort.Type == intstr.String {
				for _, msg := range validation.IsValidPortName(p.TargetPort.StrVal) {
					errs = append(errs, field.Invalid(path.Child("targetPort"), p.TargetPort.StrVal, msg))
				}
			}
		}
		if len(o.Spec.Selector) == 0 && o.Spec.Type != corev1.ServiceTypeExternalName {
			errs = append(errs, field.Required(spec.Child("selector"), "a Service of the chart selects its pods"))
		}
	case *corev1.Secret:
		checkMeta(o.ObjectMeta, validation.IsDNS1123Subdomain)
		for k := range o.Data {
			for _, msg := range validation.IsConfigMapKey(k) {
				errs = append(errs, field.Invalid(field.NewPath("data"), k, msg))
			}
		}
		for k := range o.StringData {
			for _, msg := range validation.IsConfigMapKey(k) {
				errs = append(errs, field.Invalid(field.NewPath("stringData"), k, msg))
			}
		}
	case *corev1.PersistentVolumeClaim:
		checkMeta(o.ObjectMeta, validation.IsDNS1123Subdomain)
		if len(o.Spec.AccessModes) == 0 {
			errs = append(errs, field.Required(spec.Child("accessModes"), ""))
		}
		if _, ok := o.Spec.Resources.Requests[corev1.ResourceStorage]; !ok {
			errs = append(errs, field.Required(spec.Child("resources", "requests", "storage"), ""))
		}
	case *networkingv1.NetworkPolicy:
		checkMeta(o.ObjectMeta, validation.IsDNS1123Subdomain)
		errs = append(errs, selector(&o.Spec.PodSelector, spec.Child("podSelector"))...)
		for i, rule := range o.Spec.Ingress {
			for j, peer := range rule.From {
				path := spec.Child("ingress").Index(i).Child("from").Index(j)
				if peer.PodSelector != nil {
					errs = append(errs, selector(peer.PodSelector, path.Child("podSelector"))...)
				}
				if peer.NamespaceSelector != nil {
					errs = append(errs, selector(peer.NamespaceSelector, path.Child("namespaceSelector"))...)
				}
				if peer.IPBlock != nil && (peer.PodSelector != nil || peer.NamespaceSelector != nil) {
					errs = append(errs, field.Forbidden(path, "ipBlock with a selector"))
				}
			}
		}
	case *policyv1.PodDisruptionBudget:
		checkMeta(o.ObjectMeta, validation.IsDNS1123Subdomain)
		if (o.Spec.MinAvailable == nil) == (o.Spec.MaxUnavailable == nil) {
			errs = append(errs, field.Invalid(spec, "", "exactly one of minAvailable and maxUnavailable"))
		}
		if o.Spec.Selector == nil {
			errs = append(errs, field.Required(spec.Child("selector"), ""))
		} else {
			errs = append(errs, selector(o.Spec.Selector, spec.Child("selector"))...)
		}
	case *autoscalingv2.HorizontalPodAutoscaler:
		checkMeta(o.ObjectMeta, validation.IsDNS1123Subdomain)
		if o.Spec.MinReplicas != nil && (*o.Spec.MinReplicas < 1 || *o.Spec.MinReplicas > o.Spec.MaxReplicas) {
			errs = append(errs, field.Invalid(spec.Child("minReplicas"), *o.Spec.MinReplicas, "1 <= minReplicas <= maxReplicas"))
		}
		if o.Spec.ScaleTargetRef.Kind == "" || o.Spec.ScaleTargetRef.Name == "" {
			errs = append(errs, field.Required(spec.Child("scaleTargetRef"), "kind and name"))
		}
		if len(o.Spec.Metrics) == 0 {
			errs = append(errs, field.Required(spec.Child("metrics"), "what to scale on"))
		}
	case *networkingv1.Ingress:
		checkMeta(o.ObjectMeta, validation.IsDNS1123Subdomain)
		for i, rule := range o.Spec.Rules {
			if rule.HTTP == nil {
				continue
			}
			for j, p := range rule.HTTP.Paths {
				path := spec.Child("rules").Index(i).Child("http", "paths").Index(j)
				if p.PathType == nil {
					errs = append(errs, field.Required(path.Child("pathType"), ""))
				}
				if !strings.HasPrefix(p.Path, "/") {
					errs = append(errs, field.Invalid(path.Child("path"), p.Path, "must start with /"))
				}
				if p.Backend.Service == nil || p.Backend.Service.Name == "" {
					errs = append(errs, field.Required(path.Child("backend", "service", "name"), ""))
				}
			}
		}
	default:
		errs = append(errs, field.NotSupported(field.NewPath("kind"), fmt.Sprintf("%T", obj), []string{}))
	}
	out := make([]string, 0, len(errs))
	for _, e := range errs {
		out = append(out, e.Error())
	}
	return out
}

func isZero(v *intstr.IntOrString) bool {
	return v == nil || (v.Type == intstr.Int && v.IntVal == 0) || (v.Type == intstr.String && v.StrVal == "0%")
}

func selector(s *metav1.LabelSelector, path *field.Path) field.ErrorList {
	if _, err := metav1.LabelSelectorAsSelector(s); err != nil {
		return field.ErrorList{field.Invalid(path, s.String(), err.Error())}
	}
	return nil
}

// workload: the selector selects the pod template's own labels, and the pod
// spec holds together.
func workload(sel *metav1.LabelSelector, tpl corev1.PodTemplateSpec, spec *field.Path) field.ErrorList {
	var errs field.ErrorList
	if sel == nil || (len(sel.MatchLabels) == 0 && len(sel.MatchExpressions) == 0) {
		errs = append(errs, field.Required(spec.Child("selector"), ""))
	} else if s, err := metav1.LabelSelectorAsSelector(sel); err != nil {
		errs = append(errs, field.Invalid(spec.Child("selector"), sel.String(), err.Error()))
	} else if !s.Matches(labels.Set(tpl.Labels)) {
		errs = append(errs, field.Invalid(spec.Child("template", "metadata", "labels"), tpl.Labels,
			"`selector` does not match template `labels`"))
	}
	errs = append(errs, metavalidation.ValidateLabels(tpl.Labels, spec.Child("template", "metadata", "labels"))...)
	return append(errs, podSpec(&tpl.Spec, spec.Child("template", "spec"))...)
}

func podSpec(p *corev1.PodSpec, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	volumes := map[string]bool{}
	for i, v := range p.Volumes {
		vp := path.Child("volumes").Index(i)
		for _, msg := range validation.IsDNS1123Label(v.Name) {
			errs = append(errs, field.Invalid(vp.Child("name"), v.Name, msg))
		}
		if volumes[v.Name] {
			errs = append(errs, field.Duplicate(vp.Child("name"), v.Name))
		}
		volumes[v.Name] = true
		sources := 0
		if v.Secret != nil {
			sources++
			if v.Secret.SecretName == "" {
				errs = append(errs, field.Required(vp.Child("secret", "secretName"), ""))
			}
			for j, item := range v.Secret.Items {
				if item.Key == "" || item.Path == "" || strings.HasPrefix(item.Path, "/") || strings.Contains(item.Path, "..") {
					errs = append(errs, field.Invalid(vp.Child("secret", "items").Index(j), item, "a key and a relative path"))
				}
			}
		}
		if v.EmptyDir != nil {
			sources++
		}
		if v.PersistentVolumeClaim != nil {
			sources++
			if v.PersistentVolumeClaim.ClaimName == "" {
				errs = append(errs, field.Required(vp.Child("persistentVolumeClaim", "claimName"), ""))
			}
		}
		if v.Projected != nil || v.ConfigMap != nil {
			sources++
		}
		if sources != 1 {
			errs = append(errs, field.Invalid(vp, v.Name, "exactly one volume source (of those the chart uses)"))
		}
	}
	if len(p.Containers) == 0 {
		errs = append(errs, field.Required(path.Child("containers"), ""))
	}
	names := map[string]bool{}
	for _, group := range []struct {
		name string
		list []corev1.Container
	}{{"initContainers", p.InitContainers}, {"containers", p.Containers}} {
		for i := range group.list {
			c := &group.list[i]
			cp := path.Child(group.name).Index(i)
			for _, msg := range validation.IsDNS1123Label(c.Name) {
				errs = append(errs, field.Invalid(cp.Child("name"), c.Name, msg))
			}
			if names[c.Name] {
				errs = append(errs, field.Duplicate(cp.Child("name"), c.Name))
			}
			names[c.Name] = true
			errs = append(errs, container(c, volumes, cp)...)
		}
	}
	return errs
}

func container(c *corev1.Container, volumes map[string]bool, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	if c.Image == "" {
		errs = append(errs, field.Required(path.Child("image"), ""))
	}
	ports := map[string]bool{}
	for i, p := range c.Ports {
		pp := path.Child("ports").Index(i)
		if p.ContainerPort < 1 || p.ContainerPort > 65535 {
			errs = append(errs, field.Invalid(pp.Child("containerPort"), p.ContainerPort, "1-65535"))
		}
		if p.Name != "" {
			for _, msg := range validation.IsValidPortName(p.Name) {
				errs = append(errs, field.Invalid(pp.Child("name"), p.Name, msg))
			}
			if ports[p.Name] {
				errs = append(errs, field.Duplicate(pp.Child("name"), p.Name))
			}
			ports[p.Name] = true
		}
	}
	for i, e := range c.Env {
		for _, msg := range validation.IsEnvVarName(e.Name) {
			errs = append(errs, field.Invalid(path.Child("env").Index(i).Child("name"), e.Name, msg))
		}
	}
	mounts := map[string]bool{}
	for i, m := range c.VolumeMounts {
		mp := path.Child("volumeMounts").Index(i)
		if !volumes[m.Name] {
			errs = append(errs, field.NotFound(mp.Child("name"), m.Name))
		}
		if !strings.HasPrefix(m.MountPath, "/") {
			errs = append(errs, field.Invalid(mp.Child("mountPath"), m.MountPath, "an absolute path"))
		}
		if mounts[m.MountPath] {
			errs = append(errs, field.Duplicate(mp.Child("mountPath"), m.MountPath))
		}
		mounts[m.MountPath] = true
	}
	for name, probe := range map[string]*corev1.Probe{"livenessProbe": c.LivenessProbe,
		"readinessProbe": c.ReadinessProbe, "startupProbe": c.StartupProbe} {
		if probe == nil {
			continue
		}
		pp := path.Child(name)
		handlers := 0
		if probe.HTTPGet != nil {
			handlers++
			if port := probe.HTTPGet.Port; port.Type == intstr.String && !ports[port.StrVal] {
				errs = append(errs, field.NotFound(pp.Child("httpGet", "port"), port.StrVal))
			}
		}
		if probe.Exec != nil {
			handlers++
			if len(probe.Exec.Command) == 0 {
				errs = append(errs, field.Required(pp.Child("exec", "command"), ""))
			}
		}
		if probe.TCPSocket != nil {
			handlers++
		}
		if probe.GRPC != nil {
			handlers++
		}
		if handlers != 1 {
			errs = append(errs, field.Invalid(pp, handlers, "exactly one handler"))
		}
	}
	if c.Lifecycle != nil && c.Lifecycle.PreStop != nil {
		h := c.Lifecycle.PreStop
		n := 0
		for _, set := range []bool{h.Exec != nil, h.HTTPGet != nil, h.TCPSocket != nil, h.Sleep != nil} {
			if set {
				n++
			}
		}
		if n != 1 {
			errs = append(errs, field.Invalid(path.Child("lifecycle", "preStop"), n, "exactly one handler"))
		}
	}
	for res, q := range c.Resources.Limits {
		if req, ok := c.Resources.Requests[res]; ok && req.Cmp(q) > 0 {
			errs = append(errs, field.Invalid(path.Child("resources", "requests").Key(string(res)), req.String(),
				"must be less than or equal to the limit "+q.String()))
		}
	}
	return errs
}
