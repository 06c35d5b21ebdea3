// Prints, as YAML, the CustomResourceDefinitions k3s registers from k3s-io/helm-controller
// (HelmChart, HelmChartConfig): crds.List(), what k3s' server hands to wrangler's CRD
// registration. Built by .ci/tools.sh (install_k3s_crds) against the helm-controller version
// pinned there; the GitOps rehearsal applies the output to its API server.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"

	"github.com/k3s-io/helm-controller/pkg/crds"
	"sigs.k8s.io/yaml"
)

func fail(err error) {
	fmt.Fprintln(os.Stderr, "k3s-crds:", err)
	os.Exit(1)
}

func main() {
	list, err := crds.List()
	if err != nil {
		fail(err)
	}
	if len(list) == 0 {
		fail(fmt.Errorf("helm-controller lists no CRDs"))
	}
	sort.Slice(list, func(i, j int) bool { return list[i].Name < list[j].Name })
	for _, crd := range list {
		crd.APIVersion = "apiextensions.k8s.io/v1"
		crd.Kind = "CustomResourceDefinition"
		// A manifest, not a server's copy: no empty status or null creationTimestamp.
		raw, err := json.Marshal(crd)
		if err != nil {
			fail(err)
		}
		var object map[string]any
		if err := json.Unmarshal(raw, &object); err != nil {
			fail(err)
		}
		delete(object, "status")
		if metadata, ok := object["metadata"].(map[string]any); ok {
			delete(metadata, "creationTimestamp")
		}
		out, err := yaml.Marshal(object)
		if err != nil {
			fail(err)
		}
		fmt.Printf("---\n%s", out)
	}
}
