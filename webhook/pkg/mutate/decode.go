package mutate

import (
	"fmt"

	"github.com/datadog-csi/datadog-csi/webhook/pkg/mutate/jsonscan"
)

// DecodePodFields reads the PodFields of a pod's JSON in one pass without
// reflection (see package jsonscan); everything else in the pod is checked
// and skipped. It decodes what encoding/json would, except that keys match
// case-sensitively, as the Kubernetes API machinery matches them.
func DecodePodFields(raw []byte) (*PodFields, error) {
	var f PodFields
	s := jsonscan.New(raw)
	if err := f.scan(s); err != nil {
		return nil, fmt.Errorf("decode pod: %w", err)
	}
	if err := s.End(); err != nil {
		return nil, fmt.Errorf("decode pod: %w", err)
	}
	return &f, nil
}

func (f *PodFields) scan(s *jsonscan.Scanner) error {
	return s.Object(func(key []byte) error {
		switch string(key) {
		case "metadata":
			return s.Object(func(key []byte) error {
				var err error
				switch string(key) {
				case "namespace":
					f.Metadata.Namespace, err = s.String()
				case "labels":
					f.Metadata.Labels, err = scanStringMap(s, f.Metadata.Labels)
				case "annotations":
					f.Metadata.Annotations, err = scanStringMap(s, f.Metadata.Annotations)
				default:
					err = s.Skip()
				}
				return err
			})
		case "spec":
			return s.Object(func(key []byte) error {
				var err error
				switch string(key) {
				case "containers":
					f.Spec.Containers, err = scanContainers(s, f.Spec.Containers)
				case "initContainers":
					f.Spec.InitContainers, err = scanContainers(s, f.Spec.InitContainers)
				case "volumes":
					f.Spec.Volumes, err = scanNames(s, f.Spec.Volumes)
				default:
					err = s.Skip()
				}
				return err
			})
		}
		return s.Skip()
	})
}

// scanStringMap reads an object of strings into m (created when nil, as
// encoding/json does; null leaves m as it is).
func scanStringMap(s *jsonscan.Scanner, m map[string]string) (map[string]string, error) {
	if s.Null() {
		return m, nil
	}
	if m == nil {
		m = make(map[string]string, 8)
	}
	err := s.Object(func(key []byte) error {
		v, err := s.String()
		m[string(key)] = v
		return err
	})
	return m, err
}

// named is an element of a list the mutation only reads names of.
type named = struct {
	Name string `json:"name"`
}

// scanNames reads a list of objects, keeping their "name". Like
// encoding/json, null leaves the list as it is and [] makes it empty.
func scanNames(s *jsonscan.Scanner, list []named) ([]named, error) {
	if s.Null() {
		return list, nil
	}
	list = make([]named, 0)
	err := s.Array(func() error {
		var n named
		if err := s.Object(func(key []byte) error {
			if string(key) != "name" {
				return s.Skip()
			}
			var err error
			n.Name, err = s.String()
			return err
		}); err != nil {
			return err
		}
		list = append(list, n)
		return nil
	})
	return list, err
}

func scanContainers(s *jsonscan.Scanner, list []slimContainer) ([]slimContainer, error) {
	if s.Null() {
		return list, nil
	}
	list = make([]slimContainer, 0)
	err := s.Array(func() error {
		var c slimContainer
		if err := s.Object(func(key []byte) error {
			var err error
			switch string(key) {
			case "name":
				c.Name, err = s.String()
			case "env":
				c.Env, err = scanNames(s, c.Env)
			case "volumeMounts":
				c.VolumeMounts, err = scanMounts(s, c.VolumeMounts)
			default:
				err = s.Skip()
			}
			return err
		}); err != nil {
			return err
		}
		list = append(list, c)
		return nil
	})
	return list, err
}

func scanMounts(s *jsonscan.Scanner, list []slimMount) ([]slimMount, error) {
	if s.Null() {
		return list, nil
	}
	list = make([]slimMount, 0)
	err := s.Array(func() error {
		var m slimMount
		if err := s.Object(func(key []byte) error {
			var err error
			switch string(key) {
			case "name":
				m.Name, err = s.String()
			case "mountPath":
				m.MountPath, err = s.String()
			default:
				err = s.Skip()
			}
			return err
		}); err != nil {
			return err
		}
		list = append(list, m)
		return nil
	})
	return list, err
}
