# Multi-stage build of the three binaries into one static, distroless image.
#   docker build -t ghcr.io/m2m-dev/m2m-operator:dev .     (or: make docker-build)
# The manager runs /manager, the token server /token-server (see config/).
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ENV CGO_ENABLED=0
RUN go build -trimpath -ldflags "-s -w" -o /out/ ./cmd/manager ./cmd/token-server ./cmd/kubectl-m2m

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/manager /out/token-server /out/kubectl-m2m /
USER 65532:65532
ENTRYPOINT ["/manager"]
