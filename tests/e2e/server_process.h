// Starts a real `tessera serve` on free loopback ports and stops it with a signal.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <vector>

#include "tests/testing/paths.h"

namespace tessera::testing {

class ServerProcess {
 public:
  // Runs `tessera serve --port 0 --grpc-port 0 EXTRA...`; waits until both listeners are up.
  bool Start(const std::vector<std::string>& extra = {}, int timeout_s = 60) {
    int out[2];
    if (::pipe(out) != 0) return false;
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(out[1], STDOUT_FILENO);
      ::close(out[0]);
      ::close(out[1]);
      std::vector<std::string> args = {TesseraBinary(), "serve", "--port", "0", "--grpc-port", "0"};
      args.insert(args.end(), extra.begin(), extra.end());
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    ::close(out[1]);
    fd_ = out[0];
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
    while (http_port_ == 0 || grpc_port_ == 0) {
      const int left = static_cast<int>(
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count());
      if (left <= 0) return false;
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, left) <= 0) return false;
      char buf[4096];
      ssize_t n = ::read(fd_, buf, sizeof(buf));
      if (n <= 0) return false;
      output_.append(buf, n);
      ParsePort("listening http ", &http_port_);
      ParsePort("listening grpc ", &grpc_port_);
    }
    return true;
  }

  // Sends `sig` and waits for the exit status (-1 if it did not exit in time).
  int Stop(int sig = SIGTERM, int timeout_s = 60) {
    if (pid_ <= 0) return -1;
    ::kill(pid_, sig);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
    int status = 0;
    while (std::chrono::steady_clock::now() < deadline) {
      pid_t r = ::waitpid(pid_, &status, WNOHANG);
      if (r == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 20) > 0) {
        char buf[4096];
        ssize_t n = ::read(fd_, buf, sizeof(buf));
        if (n > 0) output_.append(buf, n);
      }
    }
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    return -1;
  }

  ~ServerProcess() {
    if (pid_ > 0) Stop(SIGKILL, 5);
    if (fd_ >= 0) ::close(fd_);
  }

  int http_port() const { return http_port_; }
  int grpc_port() const { return grpc_port_; }
  const std::string& output() const { return output_; }

 private:
  void ParsePort(const std::string& prefix, int* port) {
    auto pos = output_.find(prefix);
    if (pos == std::string::npos || *port != 0) return;
    auto eol = output_.find('\n', pos);
    if (eol == std::string::npos) return;
    std::string line = output_.substr(pos, eol - pos);
    *port = std::stoi(line.substr(line.rfind(':') + 1));
  }

  pid_t pid_ = -1;
  int fd_ = -1;
  int http_port_ = 0;
  int grpc_port_ = 0;
  std::string output_;
};

}  // namespace tessera::testing
