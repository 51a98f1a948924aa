/* pause: the sandbox ("infra") process of a pod. It holds the pod's
 * namespaces, reaps zombies (it is PID 1 when the pod shares its PID
 * namespace) and exits cleanly on SIGINT/SIGTERM. Built with `gcc -static`
 * into a FROM-scratch image, because no registry serves registry.k8s.io/pause
 * here. Written for this project; see docs/offline-cluster.md. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_term(int sig) { (void)sig; _exit(0); }

static void on_child(int sig) {
	(void)sig;
	while (waitpid(-1, NULL, WNOHANG) > 0) {
	}
}

int main(int argc, char **argv) {
	if (argc > 1 && strcmp(argv[1], "-v") == 0) {
		puts("pause (datadog-csi offline build)");
		return 0;
	}
	struct sigaction term = {.sa_handler = on_term};
	struct sigaction child = {.sa_handler = on_child, .sa_flags = SA_NOCLDSTOP};
	if (sigaction(SIGINT, &term, NULL) < 0 || sigaction(SIGTERM, &term, NULL) < 0 ||
	    sigaction(SIGCHLD, &child, NULL) < 0) {
		perror("sigaction");
		return 1;
	}
	for (;;)
		pause();
}
