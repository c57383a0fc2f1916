// Command k8s_validate strictly decodes Kubernetes manifests (a multi-document YAML stream on
// stdin) into the typed objects of k8s.io/api, offline: an unknown or misspelt field, a duplicate
// field, a wrong type or an unknown apiVersion/kind of a built-in group fails. Kinds of other
// groups (CRDs such as monitoring.coreos.com PodMonitor) are listed as "skipped".
// Output: one line per document, "ok KIND NAME", "skipped KIND NAME" or "error ...".
// Exit 1 when any document fails.
package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"
)

type header struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
}

func main() {
	strict := json.NewSerializerWithOptions(json.DefaultMetaFactory, scheme.Scheme, scheme.Scheme,
		json.SerializerOptions{Yaml: true, Strict: true})
	reader := utilyaml.NewYAMLReader(bufio.NewReader(os.Stdin))
	failed := false
	for {
		doc, err := reader.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			fmt.Printf("error reading stream: %v\n", err)
			os.Exit(1)
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		var h header
		if err := yaml.Unmarshal(doc, &h); err != nil {
			fmt.Printf("error not YAML: %v\n", err)
			failed = true
			continue
		}
		_, _, err = strict.Decode(doc, nil, nil)
		switch {
		case err == nil:
			fmt.Printf("ok %s %s\n", h.Kind, h.Metadata.Name)
		case runtime.IsNotRegisteredError(err) && !builtinGroup(h.APIVersion):
			fmt.Printf("skipped %s %s\n", h.Kind, h.Metadata.Name)
		default:
			fmt.Printf("error %s %s: %v\n", h.Kind, h.Metadata.Name, strings.ReplaceAll(err.Error(), "\n", " "))
			failed = true
		}
	}
	if failed {
		os.Exit(1)
	}
}

// builtinGroup: an apiVersion of the core API or a k8s.io group, which must be known.
func builtinGroup(apiVersion string) bool {
	group, _, found := strings.Cut(apiVersion, "/")
	return !found || strings.HasSuffix(group, ".k8s.io") || !strings.Contains(group, ".")
}

func stripComments(doc []byte) []byte {
	var out [][]byte
	for _, line := range bytes.Split(doc, []byte("\n")) {
		if !bytes.HasPrefix(bytes.TrimSpace(line), []byte("#")) {
			out = append(out, line)
		}
	}
	return bytes.Join(out, []byte("\n"))
}
