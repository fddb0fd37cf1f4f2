# The cors-extproc image, ghcr.io/cors-extproc/cors-extproc: a static binary on distroless.
#   make image
# which runs, with VERSION from git describe:
#   docker build --build-arg VERSION=$VERSION -t ghcr.io/cors-extproc/cors-extproc:$VERSION .
# Kept in step with go.mod's go line (deploy/docker_test.go checks it).
ARG GO_VERSION=1.26.8

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
ARG TARGETOS
ARG TARGETARCH
ARG VERSION=dev
WORKDIR /src
# Dependencies first: this layer is reused until go.mod or go.sum change.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} \
    go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" \
    -o /out/cors-extproc ./cmd/cors-extproc

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/cors-extproc /cors-extproc
# distroless's nonroot user, by number so Kubernetes can verify runAsNonRoot.
USER 65532:65532
# gRPC (ext_proc, health, reflection) and admin (/metrics, /healthz, /readyz).
EXPOSE 9002 9090
ENTRYPOINT ["/cors-extproc"]
