// Command kstatus prints how sigs.k8s.io/cli-utils/pkg/kstatus/status (the library Flux's health
// checks and Helm 4's --wait use) reads each object of a JSON array given on stdin.
package main

import (
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

func main() {
	// apimachinery's json keeps integers as int64, as the apiserver's decoder does.
	data, err := io.ReadAll(os.Stdin)
	var objects []map[string]interface{}
	if err == nil {
		err = json.Unmarshal(data, &objects)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "decoding stdin:", err)
		os.Exit(2)
	}
	for _, o := range objects {
		u := &unstructured.Unstructured{Object: o}
		res, err := status.Compute(u)
		if err != nil {
			fmt.Fprintln(os.Stderr, u.GetName(), "error:", err)
			os.Exit(1)
		}
		fmt.Printf("%s %s\n", u.GetName(), res.Status)
	}
}
