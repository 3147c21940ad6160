//go:build tools

// Package tools pins the upstream main packages that build.sh compiles, so
// that `go mod tidy` keeps them (and everything they import) in go.mod and
// go.sum. This file is never compiled: importing a main package is only
// legal behind a build tag that no real build sets.
package tools

import (
	_ "go.etcd.io/etcd/server/v3" // package main of etcd (wraps etcdmain.Main)
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
