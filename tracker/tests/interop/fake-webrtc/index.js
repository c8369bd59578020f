// Signaling-only RTCPeerConnection for the tracker interop test: enough of the API for
// simple-peer to create non-trickle offers and answers. No ICE, no data: the bittorrent-tracker
// client's messages are what the test is about.
let counter = 0;

class FakeChannel {
  constructor(label) {
    this.label = label;
    this.readyState = 'connecting';
    this.binaryType = 'arraybuffer';
    this.bufferedAmount = 0;
    this.bufferedAmountLowThreshold = 0;
    this.onopen = this.onclose = this.onmessage = this.onerror = this.onbufferedamountlow = null;
  }
  send() { throw new Error('fake data channel: no data'); }
  close() { this.readyState = 'closed'; }
  addEventListener() {}
  removeEventListener() {}
}

export class RTCSessionDescription {
  constructor(init) { Object.assign(this, init); }
}

export class RTCIceCandidate {
  constructor(init) { Object.assign(this, init); }
}

export class RTCPeerConnection {
  constructor(config) {
    this.config = config;
    this.id = ++counter;
    this.localDescription = null;
    this.remoteDescription = null;
    this.signalingState = 'stable';
    this.iceConnectionState = 'new';
    this.iceGatheringState = 'new';
    this.connectionState = 'new';
  }
  createDataChannel(label) { return new FakeChannel(label); }
  async createOffer() { return { type: 'offer', sdp: this.sdp('offer') }; }
  async createAnswer() { return { type: 'answer', sdp: this.sdp('answer') }; }
  sdp(kind) {
    return `v=0\r\no=- ${this.id} 2 IN IP4 127.0.0.1\r\ns=${kind}\r\nt=0 0\r\n` +
      'a=group:BUNDLE 0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n';
  }
  async setLocalDescription(d) {
    this.localDescription = new RTCSessionDescription(d);
    setTimeout(() => {
      this.iceGatheringState = 'complete';
      if (this.onicegatheringstatechange) this.onicegatheringstatechange();
      if (this.onicecandidate) this.onicecandidate({ candidate: null });
    }, 0);
  }
  async setRemoteDescription(d) { this.remoteDescription = new RTCSessionDescription(d); }
  async addIceCandidate() {}
  getStats(cb) { const r = new Map(); if (typeof cb === 'function') cb({ result: () => [] }); return Promise.resolve(r); }
  getTransceivers() { return []; }
  close() { this.connectionState = 'closed'; }
  addEventListener() {}
  removeEventListener() {}
}

export default { RTCPeerConnection, RTCSessionDescription, RTCIceCandidate };
